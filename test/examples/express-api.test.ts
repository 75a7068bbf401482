// examples/express-api against a real Tessera, both ways of checking tokens (test/examples/support.ts).
import t from 'tap'
import { exampleSuite } from './support.js'

await exampleSuite(t, 'express-api')
