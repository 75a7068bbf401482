// The Grafana dashboard (deploy/grafana/tessera.json) and the Prometheus alerts
// (deploy/prometheus/alerts.yml) read only metrics that a running server exports: every PromQL
// expression in them is parsed with the Prometheus project's own grammar, and each metric it
// selects must be declared by GET /metrics. Where promtool is installed, the rules are also
// checked by it and their unit tests (alerts.test.yml) run.
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parser } from '@prometheus-io/lezer-promql'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { packageRoot } from '../../src/paths.js'
import { parseMetrics } from '../helpers/metrics.js'
import { startTestServer } from '../helpers/server.js'

const dashboardPath = join(packageRoot, 'deploy', 'grafana', 'tessera.json')
const alertsDir = join(packageRoot, 'deploy', 'prometheus')
const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8'))
const alerts = parseYaml(readFileSync(join(alertsDir, 'alerts.yml'), 'utf8'))

// Series that Prometheus makes itself for every scrape target.
const SCRAPE_SERIES = new Set(['up'])

/**
 * The metric names an expression selects. Grafana's variables are replaced by what they stand
 * for first, so that the expression is PromQL; a syntax error fails the test.
 */
function metricNames(expr: string): string[] {
  const promql = expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m')
  const tree = parser.parse(promql)
  const names: string[] = []
  const errors: number[] = []
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(node.from)
      if (node.name !== 'VectorSelector') return
      const id = node.node.getChild('Identifier')
      if (id === null) throw new Error(`a selector without a metric name in: ${expr}`)
      names.push(promql.slice(id.from, id.to))
    },
  })
  if (errors.length > 0) throw new Error(`not PromQL (at ${errors.join(', ')}): ${expr}`)
  return names
}

/** The PromQL of a Grafana query variable: label_values(selector, label) selects `selector`. */
function variableExpr(query: string): string | undefined {
  const m = /^\s*label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$/.exec(query)
  return m === null ? undefined : m[1]
}

function dashboardPanels(): any[] {
  return (dashboard.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])])
}

function dashboardExprs(): string[] {
  const exprs = dashboardPanels().flatMap((p) => (p.targets ?? []).map((target: any) => target.expr as string))
  for (const v of dashboard.templating.list as any[]) {
    const query = typeof v.query === 'string' ? v.query : v.query?.query
    const expr = variableExpr(query)
    if (expr === undefined) throw new Error(`variable ${v.name}: not a label_values query: ${query}`)
    exprs.push(expr)
  }
  return exprs
}

const alertRules = (): any[] => (alerts.groups as any[]).flatMap((g) => g.rules as any[])

t.test('the dashboard imports into Grafana 10+: schema, a datasource input, panels that use it', async (t) => {
  t.ok(dashboard.schemaVersion >= 38, `schemaVersion ${dashboard.schemaVersion}`)
  t.equal(dashboard.id, null, 'no id: Grafana gives one at import')
  t.ok(typeof dashboard.uid === 'string' && dashboard.uid.length <= 40, 'a stable uid')
  t.match(dashboard.__inputs, [{ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }])
  const panels = dashboardPanels()
  const ids = panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const graphs = panels.filter((p) => p.type !== 'row')
  t.ok(graphs.length >= 20, `${graphs.length} panels`)
  for (const p of graphs) {
    t.same(p.datasource, { type: 'prometheus', uid: '${DS_PROMETHEUS}' }, `${p.title}: the imported datasource`)
    t.ok(p.targets.length > 0 && p.targets.every((x: any) => typeof x.expr === 'string' && x.expr !== ''), `${p.title}: queries`)
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title}: within the grid`)
  }
  const titles = graphs.map((p) => p.title as string)
  for (const wanted of [
    'Requests by route and status',
    'Latency by route (p50, p99)',
    'Tokens issued by grant',
    'Tokens issued by client (top 10)',
    'Introspections by result',
    'Revocations',
    'Login failures by reason',
    'Throttling',
    'Client authentication failures',
    'Event-loop lag',
    'Database pool (Postgres)',
    'Password hashing queue',
    'View state',
    'Change-feed lag',
    'Signing key ages',
    'Signing keys by state',
  ]) {
    t.ok(titles.includes(wanted), `a panel "${wanted}"`)
  }
})

t.test('alerts.yml: the five alerts, each with a for: duration, a severity and a summary', async (t) => {
  const rules = alertRules()
  t.same(
    rules.map((r) => r.alert).sort(),
    ['TesseraHighErrorRate', 'TesseraHighLatency', 'TesseraLoginFailureSpike', 'TesseraNotReady', 'TesseraSigningKeyNotRotated'],
  )
  for (const r of rules) {
    t.match(r.for, /^\d+[smh]$/, `${r.alert}: for`)
    t.ok(['page', 'warning'].includes(r.labels?.severity), `${r.alert}: severity`)
    t.ok(typeof r.annotations?.summary === 'string' && typeof r.annotations?.description === 'string', `${r.alert}: annotations`)
  }
})

t.test('the names are found: a selector in any position, histogram series, and a syntax error is refused', async (t) => {
  t.same(
    metricNames('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[$__rate_interval]))) > on(job) group_left b + c_total and up == 0'),
    ['a_bucket', 'b', 'c_total', 'up'],
  )
  t.throws(() => metricNames('sum(rate(x[5m])'), /not PromQL/)
  t.throws(() => metricNames('{__name__="x"}'), /without a metric name/)
  t.equal(variableExpr('label_values(tessera_ready{job=~"$job"}, instance)'), 'tessera_ready{job=~"$job"}')
})

t.test('every metric the dashboard and the alerts use is exported by a running server', async (t) => {
  const srv = await startTestServer(t)
  const r = await srv.admin('GET', '/metrics')
  t.equal(r.status, 200)
  const { types } = parseMetrics(r.text)
  const exported = (name: string): boolean => {
    if (types.has(name) || SCRAPE_SERIES.has(name)) return true
    const m = /^(.+)_(bucket|sum|count)$/.exec(name)
    return m !== null && ['histogram', 'summary'].includes(types.get(m[1]!) ?? '')
  }
  const used = new Map<string, Set<string>>()
  const note = (where: string, expr: string) => {
    for (const name of metricNames(expr)) used.set(name, (used.get(name) ?? new Set()).add(where))
  }
  for (const expr of dashboardExprs()) note('dashboard', expr)
  for (const rule of alertRules()) note(`alert ${rule.alert}`, rule.expr)
  t.ok(used.size >= 25, `${used.size} metrics used`)
  for (const [name, where] of [...used].sort()) t.ok(exported(name), `${name} (${[...where].join(', ')})`)
  t.notOk(exported('tessera_no_such_metric_total'), 'and a name it does not export is told apart')
})

const promtool = spawnSync('promtool', ['--version']).status === 0

t.test('promtool checks the rules and runs their unit tests', { skip: promtool ? false : 'promtool is not installed (apt-get install prometheus)' }, async (t) => {
  const run = (args: string[]) => execFileSync('promtool', args, { cwd: alertsDir, encoding: 'utf8' })
  t.match(run(['check', 'rules', 'alerts.yml']), /SUCCESS: 5 rules found/)
  t.match(run(['test', 'rules', 'alerts.test.yml']), /SUCCESS/)
})
