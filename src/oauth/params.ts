import { invalidRequest } from '../errors.js'

/** The parameters RFC 8707 lets a request repeat. */
const REPEATABLE = new Set(['resource'])

/**
 * A form-encoded request's parameters (RFC 6749 §3.2). Every parameter but `resource` may appear
 * once (§3.1: "Request and response parameters MUST NOT be included more than once"), and one
 * sent empty counts as absent (§3.1).
 */
export class Params {
  private constructor(private readonly values: Map<string, string[]>) {}

  static from(body: unknown): Params {
    if (body === null || body === undefined) return new Params(new Map())
    if (typeof body !== 'object' || Array.isArray(body)) {
      throw invalidRequest('the request body must be application/x-www-form-urlencoded')
    }
    const values = new Map<string, string[]>()
    for (const [name, raw] of Object.entries(body as Record<string, unknown>)) {
      const all: unknown[] = Array.isArray(raw) ? raw : [raw]
      if (all.length > 1 && !REPEATABLE.has(name)) throw invalidRequest(`parameter "${name}" is repeated`)
      const list = all.filter((v): v is string => typeof v === 'string' && v !== '')
      if (list.length > 0) values.set(name, list)
    }
    return new Params(values)
  }

  get(name: string): string | undefined {
    return this.values.get(name)?.[0]
  }

  all(name: string): string[] {
    return this.values.get(name) ?? []
  }

  has(name: string): boolean {
    return this.values.has(name)
  }

  required(name: string): string {
    const v = this.get(name)
    if (v === undefined) throw invalidRequest(`parameter "${name}" is required`)
    return v
  }
}
