// The OpenAPI document as a test reads it: fetched from a running server like any client would,
// and a check that an answer is one the document describes (its status, content type, body and
// headers), with an independent JSON Schema 2020-12 validator (ajv), the dialect of OpenAPI 3.1.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import type { Test } from 'tap'
import type { HttpResult, TestServer } from './server.js'

export type Json = Record<string, any>

/** GET /openapi.json on the admin listener, with no token. */
export async function servedDocument(srv: TestServer): Promise<Json> {
  const res = await fetch(`${srv.adminUrl}/openapi.json`)
  if (res.status !== 200) throw new Error(`GET /openapi.json: ${res.status} ${await res.text()}`)
  return (await res.json()) as Json
}

/** Response headers the document must mention whenever an answer carries them. */
const TELLING_HEADERS = ['cache-control', 'retry-after', 'www-authenticate', 'dpop-nonce', 'etag']

export class DocumentedAnswers {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false })
  private readonly compiled = new Map<object, ValidateFunction>()

  constructor(readonly doc: Json) {
    addFormats.default(this.ajv)
    this.ajv.addFormat('password', true)
    // The components as a document of their own, which the operations' schemas refer into.
    this.ajv.addSchema({ $id: 'tessera-openapi', components: doc['components'] })
  }

  private validator(schema: Json): ValidateFunction {
    let v = this.compiled.get(schema)
    if (v === undefined) {
      v = this.ajv.compile(JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"tessera-openapi#/components/')))
      this.compiled.set(schema, v)
    }
    return v
  }

  /** Errors of `value` against a schema of the document (a $ref to a component, say); [] when none. */
  errors(schema: Json, value: unknown): string[] {
    const v = this.validator(schema)
    return v(value) ? [] : (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`)
  }

  /** The operation's documented response for the answer's status, which the answer must fit. */
  check(t: Test, method: string, path: string, r: HttpResult): void {
    const what = `${method} ${path} ${r.status}`
    const op = this.doc['paths']?.[path]?.[method.toLowerCase()] as Json | undefined
    if (op === undefined) {
      t.fail(`${method} ${path} is not in the document`)
      return
    }
    const response = op['responses']?.[String(r.status)] as Json | undefined
    if (response === undefined) {
      t.fail(`${what}: status not documented (${JSON.stringify(r.body)})`)
      return
    }
    const content = response['content'] as Json | undefined
    if (content === undefined) {
      t.equal(r.text, '', `${what}: no body, as documented`)
    } else {
      const type = r.headers.get('content-type')?.split(';')[0]?.trim() ?? ''
      const media = content[type] as Json | undefined
      t.ok(media, `${what}: content type ${type} is documented`)
      if (media !== undefined) {
        const value = type.endsWith('json') ? r.body : r.text
        t.same(this.errors(media['schema'], value), [], `${what}: the body fits its schema`)
      }
    }
    const documented = new Map(Object.entries<Json>(response['headers'] ?? {}).map(([name, h]) => [name.toLowerCase(), h]))
    for (const name of TELLING_HEADERS) {
      const value = r.headers.get(name)
      if (value === null) continue
      const header = documented.get(name)
      t.ok(header, `${what}: header ${name} is documented`)
      if (header === undefined) continue
      const schema = header['schema'] as Json
      const parsed = schema['type'] === 'integer' ? Number(value) : value
      t.same(this.errors(schema, parsed), [], `${what}: header ${name}: ${value} fits its schema`)
    }
  }
}
