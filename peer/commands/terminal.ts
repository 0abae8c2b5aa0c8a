// Text from the swarm (event texts, peer-reported names, manifest errors) is printed only after its control
// characters are made visible: a peer or a file must not be able to move the cursor or retitle the terminal.

/** Replaces C0/C1 control characters (except tab) and lone surrogates by visible escapes such as `\x1b`. */
export function printable (text: string): string {
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    c => c === '\n' ? '\\n' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** A table of columns padded to their widest cell; every cell is made printable. */
export function table (rows: string[][]): string {
  const clean = rows.map(row => row.map(printable))
  const widths = clean[0]!.map((_, i) => Math.max(...clean.map(row => (row[i] ?? '').length)))
  return clean.map(row => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n')
}
