// Preloaded into a spawned server (`node --import <this file>`): writes the modules the process
// loaded whose path matches MODULE_LOG_MATCH to the file MODULE_LOG, one URL or path a line, as
// the process exits. ES modules are seen by a resolve hook as they are imported (their loader
// keeps no list one could read); CommonJS modules are read from the require cache at exit.
import { appendFileSync, writeFileSync } from 'node:fs'
import Module, { register } from 'node:module'

const file = process.env.MODULE_LOG
const match = process.env.MODULE_LOG_MATCH
if (file && match) {
  writeFileSync(file, '')
  const hook = `
    import { appendFileSync } from 'node:fs'
    let file, match
    export function initialize(data) { file = data.file; match = new RegExp(data.match) }
    export async function resolve(specifier, context, next) {
      const resolved = await next(specifier, context)
      if (match.test(resolved.url)) appendFileSync(file, resolved.url + '\\n')
      return resolved
    }`
  register(`data:text/javascript,${encodeURIComponent(hook)}`, { data: { file, match } })
  process.on('exit', () => {
    const pattern = new RegExp(match)
    const loaded = Object.keys(Module._cache).filter((path) => pattern.test(path))
    if (loaded.length > 0) appendFileSync(file, `${loaded.join('\n')}\n`)
  })
}
