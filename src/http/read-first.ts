import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'

declare module 'fastify' {
  interface FastifyRequest {
    /** What the route's readFirst made of this request (see below). */
    firstReading: unknown
  }
}

/**
 * A route's own reading of its request (a form's parameters, a list's paging, the caller), run as
 * preValidation: before fastify validates the request against the route's schema. The route's
 * checks have descriptions that clients and tests rely on ("parameter "scope" is repeated",
 * "limit must be a whole number from 1 to 1000") and an order (client authentication before a
 * missing token); run first, they keep both. The schema states the same rules, never stricter
 * ones, so what they accepted passes it: it describes the route in the OpenAPI document and
 * guards the handler against a rule the reading ever forgets. The handler gets what `read` made.
 *
 * The app must declare the request slot once: `app.decorateRequest('firstReading', null)`. A slot
 * rather than a WeakMap, and a callback rather than an async hook, because the token and
 * introspection endpoints pay for every allocation here.
 */
export function readFirst<T>(read: (request: FastifyRequest) => T | Promise<T>) {
  return {
    preValidation(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
      let result: T | Promise<T>
      try {
        result = read(request)
      } catch (err) {
        done(err as Error)
        return
      }
      if (result instanceof Promise) {
        result.then(
          (value) => {
            request.firstReading = value
            done()
          },
          (err: Error) => done(err),
        )
      } else {
        request.firstReading = result
        done()
      }
    },
    get(request: FastifyRequest): T {
      return request.firstReading as T
    },
  }
}
