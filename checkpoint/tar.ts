// A streaming tar reader and writer, enough for `docker save` / `docker load` archives (USTAR; PAX and GNU
// long-name headers are understood when reading). Entry bodies stream through: nothing holds a whole file.
import { CheckpointError } from './errors.ts'

const BLOCK = 512

export interface TarEntry {
  name: string
  size: number
  /** USTAR type flag: '0' file, '5' directory, ... */
  type: string
  /** The entry's bytes; must be consumed (or skipped with `drain`) before the next entry is read. */
  body: AsyncIterable<Uint8Array>
}

/** Reads exact byte counts from a chunked source without copying more than one chunk at a time. */
class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array>
  private head: Uint8Array = new Uint8Array(0)

  constructor (source: AsyncIterable<Uint8Array>) { this.iterator = source[Symbol.asyncIterator]() }

  private async fill (): Promise<boolean> {
    while (this.head.byteLength === 0) {
      const next = await this.iterator.next()
      if (next.done === true) return false
      this.head = next.value
    }
    return true
  }

  /** Exactly `n` bytes, or null at the end of the source. */
  async exactly (n: number): Promise<Uint8Array | null> {
    const parts: Uint8Array[] = []
    let have = 0
    while (have < n) {
      if (!(await this.fill())) {
        if (have === 0) return null
        throw new CheckpointError(`tar archive ends inside a ${n}-byte record`)
      }
      const take = this.head.subarray(0, n - have)
      this.head = this.head.subarray(take.byteLength)
      parts.push(take)
      have += take.byteLength
    }
    return parts.length === 1 ? parts[0] as Uint8Array : Buffer.concat(parts)
  }

  async * stream (n: number): AsyncGenerator<Uint8Array> {
    let left = n
    while (left > 0) {
      if (!(await this.fill())) throw new CheckpointError(`tar archive ends ${left} bytes before the end of an entry`)
      const take = this.head.subarray(0, left)
      this.head = this.head.subarray(take.byteLength)
      left -= take.byteLength
      yield take
    }
  }

  async skip (n: number): Promise<void> { for await (const _ of this.stream(n)) { /* skip */ } }

  async return (): Promise<void> { await this.iterator.return?.() }
}

function text (header: Uint8Array, offset: number, length: number): string {
  const field = header.subarray(offset, offset + length)
  const end = field.indexOf(0)
  return Buffer.from(end === -1 ? field : field.subarray(0, end)).toString('utf8')
}

function octal (header: Uint8Array, offset: number, length: number): number {
  // Sizes of 8 GiB and more are base-256 (GNU): high bit of the first byte set.
  if (((header[offset] ?? 0) & 0x80) !== 0) {
    let n = 0
    for (let i = 1; i < length; i++) n = n * 256 + (header[offset + i] ?? 0)
    return n
  }
  const digits = text(header, offset, length).trim()
  const n = digits === '' ? 0 : parseInt(digits, 8)
  if (!Number.isSafeInteger(n) || n < 0) throw new CheckpointError(`tar header: bad number ${JSON.stringify(digits)}`)
  return n
}

function checksumOk (header: Uint8Array): boolean {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i] as number
  return sum === octal(header, 148, 8)
}

function paxRecords (body: Uint8Array): Map<string, string> {
  const records = new Map<string, string>()
  const all = Buffer.from(body).toString('utf8')
  let at = 0
  while (at < all.length) {
    const space = all.indexOf(' ', at)
    const length = Number(all.slice(at, space))
    if (space === -1 || !Number.isSafeInteger(length) || length <= 0) break
    const record = all.slice(space + 1, at + length - 1)
    const eq = record.indexOf('=')
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1))
    at += length
  }
  return records
}

/** The entries of a tar stream, in order. Extended headers are applied to the entry they precede. */
export async function * readTar (source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(source)
  let longName: string | null = null
  let pax = new Map<string, string>()
  try {
    for (;;) {
      const header = await reader.exactly(BLOCK)
      if (header == null || header.every(b => b === 0)) return
      if (!checksumOk(header)) throw new CheckpointError('tar header checksum mismatch: not a tar archive, or a corrupt one')
      const type = String.fromCharCode(header[156] as number) === '\0' ? '0' : String.fromCharCode(header[156] as number)
      let size = octal(header, 124, 12)
      if (type === 'x' || type === 'g' || type === 'L') {
        if (size > 1024 * 1024) throw new CheckpointError(`tar: ${size}-byte extended header refused`)
        const body = await reader.exactly(size + (BLOCK - size % BLOCK) % BLOCK) ?? new Uint8Array(0)
        if (type === 'x') pax = paxRecords(body.subarray(0, size))
        if (type === 'L') longName = text(body, 0, size)
        continue
      }
      const prefix = text(header, 345, 155)
      let name = longName ?? pax.get('path') ?? (prefix !== '' ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100))
      if (pax.has('size')) size = Number(pax.get('size'))
      longName = null
      pax = new Map()
      name = name.replace(/^\.\//, '')
      let unread = size
      const body = (async function * () {
        for await (const chunk of reader.stream(unread)) {
          unread -= chunk.byteLength
          yield chunk
        }
      })()
      yield { name, size, type, body }
      // Whatever the consumer left of the body, then the padding.
      await reader.skip(unread + (BLOCK - size % BLOCK) % BLOCK)
    }
  } finally {
    await reader.return()
  }
}

/** Reads an entry's body to its end, discarding it. */
export async function drain (body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const _ of body) { /* discard */ }
}

/** Collects a small entry's body, refusing more than `limit` bytes. */
export async function readSmall (entry: TarEntry, limit: number): Promise<Uint8Array> {
  if (entry.size > limit) throw new CheckpointError(`tar entry ${entry.name} is ${entry.size} bytes, more than the ${limit} expected`)
  const parts: Uint8Array[] = []
  for await (const part of entry.body) parts.push(part)
  return new Uint8Array(Buffer.concat(parts))
}

/** The 512-byte USTAR header of a regular file (root-owned, mode 0644, mtime 0). */
export function tarFileHeader (name: string, size: number): Uint8Array {
  const header = Buffer.alloc(BLOCK)
  if (Buffer.byteLength(name) > 100) throw new CheckpointError(`tar entry name ${name} is longer than 100 bytes`)
  header.write(name, 0, 100, 'utf8')
  header.write('0000644\0', 100, 'ascii')
  header.write('0000000\0', 108, 'ascii')
  header.write('0000000\0', 116, 'ascii')
  header.write(size.toString(8).padStart(11, '0') + '\0', 124, 'ascii')
  header.write('00000000000\0', 136, 'ascii')
  header.write('        ', 148, 'ascii')
  header.write('0', 156, 'ascii')
  header.write('ustar\0' + '00', 257, 'ascii')
  let sum = 0
  for (const b of header) sum += b
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii')
  return new Uint8Array(header)
}

/** Zero bytes that complete an entry of `size` bytes to a whole record. */
export function tarPadding (size: number): Uint8Array {
  return new Uint8Array((BLOCK - size % BLOCK) % BLOCK)
}

/** Two zero records end an archive. */
export const TAR_END = new Uint8Array(2 * BLOCK)
