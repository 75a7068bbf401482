/** Admin commands over the admin API (written in full by the CLI work). */
export async function runAdminCommand(command: string, _args: string[]): Promise<number> {
  process.stderr.write(`tessera: "${command}" is not implemented yet\n`)
  return 2
}
