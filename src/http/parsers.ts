// How request bodies, URLs and broken HTTP become values: strictly, so that what cannot be text
// (src/input.ts) is refused here, before any route sees it, instead of being repaired into
// something else on the way.
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { parse as parseForm } from 'fast-querystring'
import formbody from '@fastify/formbody'
import type { FastifyInstance } from 'fastify'
import { invalidRequest } from '../errors.js'
import { checkPercentEncoding, checkText, decodeUtf8 } from '../input.js'

/**
 * application/x-www-form-urlencoded (RFC 6749 Appendix B: UTF-8), by @fastify/formbody, with a
 * parser that first refuses what is not text: formbody decodes the body's bytes leniently, which
 * turns bytes that are not UTF-8 into U+FFFD (so a U+FFFD sent raw is refused too: no real
 * parameter holds one), and every percent-encoded sequence must decode to UTF-8. Then the parser
 * formbody uses by default.
 */
export async function installFormParser(app: FastifyInstance): Promise<void> {
  await app.register(formbody, {
    parser: (text: string) => {
      if (text.includes('\uFFFD')) throw invalidRequest('the request body is not valid UTF-8')
      checkPercentEncoding(text, 'the request body')
      return parseForm(text)
    },
  })
}

/**
 * JSON, refused unless its bytes are UTF-8 and every string (names included) is free of NUL and
 * unpaired surrogates, which a `\u0000` or `\ud800` escape still produces from valid UTF-8.
 * Parsed by fastify's own JSON parser, with its defences against prototype poisoning.
 */
export function installJsonParser(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    let text: string
    try {
      text = decodeUtf8(body as Buffer, 'the request body')
    } catch (err) {
      return done(err as Error, undefined)
    }
    void parseJson(request, text, (err, value) => {
      if (err !== null) return done(err, undefined)
      try {
        checkJsonStrings(value)
        done(null, value)
      } catch (e) {
        done(e as Error, undefined)
      }
    })
  })
}

const JSON_STRING = { max: Number.MAX_SAFE_INTEGER, freeText: true }

/** Every string in a parsed JSON value; iterative, as the nesting is as deep as the body allows. */
function checkJsonStrings(root: unknown): void {
  const stack: [unknown, string][] = [[root, 'body']]
  while (stack.length > 0) {
    const [value, path] = stack.pop()!
    if (typeof value === 'string') checkText(path, value, JSON_STRING)
    else if (Array.isArray(value)) value.forEach((v, i) => stack.push([v, `${path}/${i}`]))
    else if (typeof value === 'object' && value !== null) {
      for (const [name, v] of Object.entries(value)) {
        checkText(`a property name in ${path}`, name, JSON_STRING)
        stack.push([v, `${path}/${name}`])
      }
    }
  }
}

/**
 * The request target as it arrived, every `%` starting a UTF-8 sequence: the query parser keeps an
 * undecodable `%FF` as the three characters it is made of. (Node's HTTP parser already refuses a
 * target with bytes beyond printable ASCII: see clientErrorHandler.)
 */
export function checkRequestTarget(url: string): void {
  checkPercentEncoding(url, 'the URL')
}

/**
 * Requests that Node's HTTP parser refuses (a NUL in a header, a malformed request line, headers
 * beyond the size limit) are answered before fastify routes them; this gives them the §5.2 shape
 * too, instead of fastify's own. The connection is closed, as Node would.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, description] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'the request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'the request was not received in time']
        : [400, 'malformed HTTP request']
  const body = JSON.stringify({ error: 'invalid_request', error_description: description })
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `cache-control: no-store\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    )
  }
  socket.destroy(err)
}
