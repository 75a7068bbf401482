// `npm run openapi`: writes docs/openapi.json, the OpenAPI 3.1 document of both APIs as a server of
// this version serves it at GET /openapi.json on its admin listener, with placeholder servers
// (src/http/openapi.ts). It starts one in memory, on free ports, and asks it over HTTP.
// test/http/openapi.test.ts fails while the committed file is not what this writes.
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../dist/src/config.js'
import { createLogger } from '../dist/src/log.js'
import { committedText } from '../dist/src/http/openapi.js'
import { endpointUrl } from '../dist/src/http/public.js'
import { startServer } from '../dist/src/server.js'

const target = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'openapi.json')
const config = loadConfig({ HOST: '127.0.0.1', PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0', DATA_DIR: 'memory://', LOG_LEVEL: 'warn' })
const running = await startServer(config, { log: createLogger('warn'), announce: () => undefined })
try {
  const res = await fetch(`${running.adminUrl}/openapi.json`)
  if (res.status !== 200) throw new Error(`GET /openapi.json: ${res.status} ${await res.text()}`)
  const text = committedText(await res.json(), { public: endpointUrl(running.tessera.issuer(), ''), admin: running.adminUrl })
  writeFileSync(target, text)
  console.log(`wrote ${target}`)
} finally {
  await running.close()
}
