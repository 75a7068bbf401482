// The revocation tests again, with serving from memory turned off (see introspect-per-call).
process.env['TESSERA_TEST_SERVE_FROM_MEMORY'] = 'false'
await import('./revoke.test.js')
