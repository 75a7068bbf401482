// Readable output for people; `--json` is the format for scripts.

/**
 * Control characters shown as escapes: a client name is free text, and an escape sequence in it
 * must not be able to rewrite the administrator's terminal.
 */
export function printable(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** A list as the CLI's flags take it (comma-separated); `empty` when there is nothing. */
export function list(values: readonly string[] | null | undefined, empty = '(none)'): string {
  if (values === null || values === undefined || values.length === 0) return empty
  return values.map(printable).join(',')
}

/** An ISO timestamp to the second, or `-`. */
export function when(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return '-'
  return iso.replace(/\.\d+Z$/, 'Z')
}

/** `key: value` lines with the values aligned. */
export function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 2
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join('')
}

/** Columns padded to their widest cell, headed by `headers`. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd() + '\n'
  return line(headers) + rows.map(line).join('')
}
