// The private network's cipher (xsalsa20, shared WebAssembly memory) with peer/pnet-cipher-fix.ts: connections
// alternating large writes no longer grow the memory until it throws, and every byte still decrypts.
import t from 'tap'
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { installPnetCipherFix } from '../peer/pnet-cipher-fix.ts'

interface Cipher { update (input: Uint8Array): Uint8Array, _xor: { _memory: Uint8Array } }
const require = createRequire(import.meta.resolve('@libp2p/pnet'))
const XSalsa20 = require('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => Cipher

t.test('two connections alternating 1 MiB writes: no RangeError, memory bounded, the stream decrypts', async t => {
  installPnetCipherFix()
  const key = randomBytes(32)
  const nonces = [randomBytes(24), randomBytes(24)]
  const senders = nonces.map(n => XSalsa20(n, key))
  const receivers = nonces.map(n => XSalsa20(n, key))
  const chunk = randomBytes(1024 * 1024)
  let mismatches = 0
  // Without the fix this throws after ~55 updates (the memory grows by each input while views are detached).
  for (let i = 0; i < 400; i++) {
    const side = i % 2
    const plain = side === 0 ? chunk : randomBytes(100 + i)
    const sealed = senders[side]!.update(plain)
    const opened = receivers[side]!.update(sealed)
    if (!Buffer.from(opened).equals(Buffer.from(plain))) mismatches++
  }
  t.equal(mismatches, 0, 'every write decrypts to what was sent')
  const memoryBytes = senders[0]!._xor._memory.length
  t.ok(memoryBytes <= 4 * 1024 * 1024, `the shared memory stays near the largest input (${memoryBytes} bytes)`)
})
