/**
 * Ends the process with `code` once nothing is left to do, rather than at once: pino writes to
 * stdout asynchronously, and process.exit can cut off the last lines (the ones saying how the
 * shutdown went). A handle left open by mistake must not keep the process alive, so after a second
 * it exits regardless.
 */
export function exitWhenIdle(code: number): void {
  process.exitCode = code
  // In a cluster worker the channel to the primary would keep the process alive; the primary
  // learns of the exit from the process itself.
  process.channel?.unref()
  setTimeout(() => process.exit(code), 1000).unref()
}
