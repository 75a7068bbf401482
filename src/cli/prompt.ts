// Passwords come from stdin or a prompt, never from a flag: a flag would land in the shell's
// history and in every `ps` listing.
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { CliError } from './admin-api.js'

/**
 * A password: the first line of stdin when it is not a terminal (so scripts can pipe one in),
 * else typed twice at a prompt on stderr with echo off.
 */
export async function readPassword(label = 'Password'): Promise<string> {
  const stdin = process.stdin
  const password = stdin.isTTY ? await promptTwice(label) : await readFirstLine(stdin)
  if (password === '') throw new CliError('the password is empty')
  return password
}

async function promptTwice(label: string): Promise<string> {
  const first = await promptHidden(`${label}: `)
  if (first === '') return first
  const again = await promptHidden(`Repeat ${label.toLowerCase()}: `)
  if (again !== first) throw new CliError('the passwords do not match')
  return first
}

/** One line, its line ending (\n or \r\n) stripped; stdin is closed after it. */
function readFirstLine(input: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input, crlfDelay: Infinity, terminal: false })
    let line: string | undefined
    input.once('error', (err) => reject(new CliError(`cannot read the password from stdin: ${err.message}`)))
    rl.once('line', (l) => {
      line = l
      rl.close()
      input.destroy()
    })
    rl.once('close', () => {
      if (line === undefined) reject(new CliError('no password on stdin (pipe one line in, or run in a terminal to be prompted)'))
      else resolve(line)
    })
  })
}

function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin
  process.stderr.write(prompt)
  stdin.setRawMode(true)
  stdin.setEncoding('utf8')
  stdin.resume()
  return new Promise((resolve, reject) => {
    let chars: string[] = []
    const finish = (err?: CliError) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      if (err === undefined) resolve(chars.join(''))
      else reject(err)
    }
    // Raw mode hands over keys as typed: Enter, Ctrl-C and Backspace are ours to interpret.
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return finish()
        if (ch === '\u0003') return finish(new CliError('cancelled', 130))
        if (ch === '\u0004') {
          if (chars.length === 0) return finish(new CliError('cancelled', 130))
        } else if (ch === '\u007f' || ch === '\b') {
          chars = chars.slice(0, -1)
        } else if (ch >= ' ') {
          chars.push(ch)
        }
      }
      return undefined
    }
    stdin.on('data', onData)
  })
}
