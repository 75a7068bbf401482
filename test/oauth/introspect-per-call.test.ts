// The introspection tests again, with serving from memory turned off: every answer comes from the
// database, through the same decision the in-memory view feeds (src/tokens/status.ts).
process.env['TESSERA_TEST_SERVE_FROM_MEMORY'] = 'false'
await import('./introspect.test.js')
