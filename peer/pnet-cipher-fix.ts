// Fixes for the cipher of libp2p private networks (@libp2p/pnet uses the `xsalsa20` package, 1.2.0, unmaintained).
//
// 1. Detached views. All its ciphers share one WebAssembly memory, and each keeps its own view of it. When one cipher
// grows the memory (an input over 640 KiB, e.g. a 1 MiB image chunk in one write), every other view is detached
// (length 0), so each other cipher's next update grows the memory again by its whole input: two connections
// alternating 1 MiB writes reached the 64 MiB maximum after 55 updates and threw `RangeError: WebAssembly.Memory.grow():
// Maximum memory size exceeded` uncaught, which killed the peer serving an image. Here a detached view is renewed
// before each update, so the memory grows only to the largest input.
//
// 2. Ciphers never freed. Each cipher takes a 64-byte slot for its key and nonce from the front of that memory and
// gives it back only on finalize(), which @libp2p/pnet never calls: every connection that got past the 24-byte nonce
// exchange leaked two slots, and the data area moved up behind them. 5,000 connections from a node WITHOUT the swarm
// key, each sending 24 random bytes, pushed the slots past the memory's end in 57 s and the next cipher threw
// (measured: 128 bytes per connection, 640 KB after 5,000). `preSharedKeyFreeingCiphers` finalizes both ciphers
// when the connection closes, so the memory holds only the slots of open connections.
// Tests: test/pnet-cipher-fix.test.ts, test/security-edges.test.ts.
import { createRequire } from 'node:module'
import { preSharedKey } from '@libp2p/pnet'
import type { ConnectionProtector, MessageStream, AbortOptions } from '@libp2p/interface'

interface WasmXor {
  _memory: Uint8Array
  update (input: Uint8Array, output: Uint8Array): void
  realloc (size: number): void
  finalize (): void
}

interface XSalsa20Instance { _xor: WasmXor | null, update (input: Uint8Array, output?: Uint8Array): Uint8Array, finalize (): void }

const require = createRequire(import.meta.resolve('@libp2p/pnet'))
const XSalsa20 = require('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => XSalsa20Instance

let installed = false

/** Installs the fix once per process; harmless when the package has no WebAssembly build (its JS fallback is fine). */
export function installPnetCipherFix (): void {
  if (installed) return
  installed = true
  const probe = XSalsa20(new Uint8Array(24), new Uint8Array(32))
  const wasm = probe._xor as WasmXor
  if (!(wasm._memory instanceof Uint8Array) || typeof wasm.realloc !== 'function') { probe.finalize(); return }
  // The newest live view of the shared memory: every grow goes through realloc, which renews the grower's view.
  let current = wasm._memory
  probe.finalize()
  const prototype = Object.getPrototypeOf(wasm) as WasmXor
  const { update, realloc, finalize } = prototype
  prototype.realloc = function (this: WasmXor, size: number): void {
    realloc.call(this, size)
    current = this._memory
  }
  prototype.update = function (this: WasmXor, input: Uint8Array, output: Uint8Array): void {
    if (this._memory.buffer !== current.buffer) this._memory = current
    update.call(this, input, output)
  }
  // finalize() wipes the key through the view: a detached one would wipe nothing.
  prototype.finalize = function (this: WasmXor): void {
    if (this._memory.buffer !== current.buffer) this._memory = current
    finalize.call(this)
  }
}

/** What the private network's ciphers hold: the shared memory, the live ciphers, how far their slots reached. */
export interface PnetCipherFigures { memoryBytes: number, liveCiphers: number, highestSlotEnd: number, freed: number }

const figures = { liveCiphers: 0, highestSlotEnd: 0, freed: 0 }

export function pnetCipherMemory (): PnetCipherFigures {
  const probe = XSalsa20(new Uint8Array(24), new Uint8Array(32))
  const memoryBytes = probe._xor?._memory?.buffer.byteLength ?? 0
  probe.finalize()
  return { memoryBytes, ...figures }
}

function counted (cipher: XSalsa20Instance): void {
  figures.liveCiphers++
  const pointer = (cipher._xor as { _pointer?: number } | null)?._pointer
  if (typeof pointer === 'number') figures.highestSlotEnd = Math.max(figures.highestSlotEnd, pointer + 64)
}

/** What @libp2p/pnet's BoxMessageStream holds: its two ciphers and the connection under it. */
interface BoxedConnection extends MessageStream {
  inboundXor: XSalsa20Instance
  outboundXor: XSalsa20Instance
  maConn: MessageStream
}

/** A cipher for a closed connection: bytes that still arrive are dropped (the real one's slot was given back). */
const closedCipher: Pick<XSalsa20Instance, 'update'> = { update: () => new Uint8Array(0) }

/** @libp2p/pnet's protector whose connections free their two ciphers on close. */
export function preSharedKeyFreeingCiphers (init: { psk: Uint8Array, timeout?: number }): () => ConnectionProtector {
  installPnetCipherFix()
  const inner = preSharedKey(init)
  return () => {
    const protector = inner()
    return {
      async protect (connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
        const boxed = await protector.protect(connection, options) as BoxedConnection
        counted(boxed.inboundXor)
        counted(boxed.outboundXor)
        let freed = false
        const free = (): void => {
          if (freed) return
          freed = true
          const { inboundXor, outboundXor } = boxed
          boxed.inboundXor = closedCipher as XSalsa20Instance
          boxed.outboundXor = closedCipher as XSalsa20Instance
          inboundXor.finalize()
          outboundXor.finalize()
          figures.liveCiphers -= 2
          figures.freed += 2
        }
        // The box re-dispatches the close of the connection under it, but not always before that one is gone.
        boxed.addEventListener('close', free)
        boxed.maConn.addEventListener('close', free)
        if (boxed.status === 'closed' || boxed.maConn.status === 'closed') free()
        return boxed
      }
    }
  }
}
