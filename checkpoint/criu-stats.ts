// CRIU's `stats-dump` image: two magic words, a u32 entry size, then a protobuf StatsEntry whose field 1
// is a DumpStatsEntry. Only the varint fields tandem reports are decoded, by hand.

export interface CriuDumpStats {
  freezingTimeUs: number
  frozenTimeUs: number
  memdumpTimeUs: number
  memwriteTimeUs: number
  pagesScanned: number
  pagesSkippedParent: number
  pagesWritten: number
}

const DUMP_FIELDS: Record<number, keyof CriuDumpStats> = {
  1: 'freezingTimeUs',
  2: 'frozenTimeUs',
  3: 'memdumpTimeUs',
  4: 'memwriteTimeUs',
  5: 'pagesScanned',
  6: 'pagesSkippedParent',
  7: 'pagesWritten'
}

/** Decodes a stats-dump file; null when the bytes are not one (truncated, other image). */
export function parseStatsDump (bytes: Uint8Array): CriuDumpStats | null {
  if (bytes.byteLength < 12) return null
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const size = view.getUint32(8, true)
  if (12 + size > bytes.byteLength) return null
  const entry = bytes.subarray(12, 12 + size)
  try {
    let dump: Uint8Array | null = null
    forEachField(entry, (field, wire, value) => { if (field === 1 && wire === 2) dump = value as Uint8Array })
    if (dump == null) return null
    const stats: CriuDumpStats = { freezingTimeUs: 0, frozenTimeUs: 0, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesSkippedParent: 0, pagesWritten: 0 }
    forEachField(dump, (field, wire, value) => {
      const key = DUMP_FIELDS[field]
      if (key != null && wire === 0) stats[key] = value as number
    })
    return stats
  } catch {
    return null
  }
}

function forEachField (buf: Uint8Array, visit: (field: number, wire: number, value: number | Uint8Array) => void): void {
  let pos = 0
  const varint = (): number => {
    let result = 0
    let scale = 1
    for (;;) {
      if (pos >= buf.byteLength) throw new RangeError('truncated varint')
      const b = buf[pos++] as number
      result += (b & 0x7f) * scale
      if ((b & 0x80) === 0) return result
      scale *= 128
      if (scale > 2 ** 63) throw new RangeError('varint too long')
    }
  }
  while (pos < buf.byteLength) {
    const key = varint()
    const field = Math.floor(key / 8)
    const wire = key & 7
    if (wire === 0) visit(field, wire, varint())
    else if (wire === 2) {
      const len = varint()
      if (pos + len > buf.byteLength) throw new RangeError('truncated field')
      visit(field, wire, buf.subarray(pos, pos + len))
      pos += len
    } else if (wire === 1) pos += 8
    else if (wire === 5) pos += 4
    else throw new RangeError(`unsupported wire type ${wire}`)
  }
}
