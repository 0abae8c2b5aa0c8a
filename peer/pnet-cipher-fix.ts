// A fix for the cipher of libp2p private networks (@libp2p/pnet uses the `xsalsa20` package, 1.2.0, unmaintained).
// All its ciphers share one WebAssembly memory, and each keeps its own view of it. When one cipher grows the memory
// (an input over 640 KiB, e.g. a 1 MiB image chunk in one write), every other view is detached (length 0), so each
// other cipher's next update grows the memory again by its whole input: two connections alternating 1 MiB writes
// reached the 64 MiB maximum after 55 updates and threw `RangeError: WebAssembly.Memory.grow(): Maximum memory size
// exceeded` uncaught, which killed the peer serving an image. Here a detached view is renewed before each update, so
// the memory grows only to the largest input. Test: test/pnet-cipher-fix.test.ts.
import { createRequire } from 'node:module'

interface WasmXor {
  _memory: Uint8Array
  update (input: Uint8Array, output: Uint8Array): void
  realloc (size: number): void
}

interface XSalsa20Instance { _xor: WasmXor, finalize (): void }

const require = createRequire(import.meta.resolve('@libp2p/pnet'))
const XSalsa20 = require('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => XSalsa20Instance

let installed = false

/** Installs the fix once per process; harmless when the package has no WebAssembly build (its JS fallback is fine). */
export function installPnetCipherFix (): void {
  if (installed) return
  installed = true
  const probe = XSalsa20(new Uint8Array(24), new Uint8Array(32))
  const wasm = probe._xor
  if (!(wasm._memory instanceof Uint8Array) || typeof wasm.realloc !== 'function') { probe.finalize(); return }
  // The newest live view of the shared memory: every grow goes through realloc, which renews the grower's view.
  let current = wasm._memory
  probe.finalize()
  const prototype = Object.getPrototypeOf(wasm) as WasmXor
  const { update, realloc } = prototype
  prototype.realloc = function (this: WasmXor, size: number): void {
    realloc.call(this, size)
    current = this._memory
  }
  prototype.update = function (this: WasmXor, input: Uint8Array, output: Uint8Array): void {
    if (this._memory.buffer !== current.buffer) this._memory = current
    update.call(this, input, output)
  }
}
