// The tandem dashboard: plain browser JavaScript, no library, every file served by the peer (works offline).
// It polls GET /v1/dashboard (boards, missions, timeline) and long-polls GET /v1/events for the live stream, sending
// the API token as the bearer token. Everything a peer or a board reported is put in with textContent, never as HTML.
const TOKEN_KEY = 'tandem-api-token'
const POLL_MS = 1000
const EVENTS_WAIT_S = 20
const MAX_EVENTS_SHOWN = 500
const TIMELINE_WINDOW_MS = 5 * 60_000

// The token: from the URL `tandem ui` prints (?token=… or #token=…), kept for this tab only and taken out of the
// address bar (and so out of the history); a reload finds it in sessionStorage.
function takeToken () {
  const query = new URLSearchParams(location.search)
  const hash = new URLSearchParams(location.hash.slice(1))
  const given = query.get('token') ?? hash.get('token')
  if (given != null && given !== '') {
    sessionStorage.setItem(TOKEN_KEY, given)
    query.delete('token')
    const rest = query.toString()
    history.replaceState(null, '', location.pathname + (rest === '' ? '' : `?${rest}`))
  }
  return sessionStorage.getItem(TOKEN_KEY)
}

const token = takeToken()
const $ = id => document.getElementById(id)

class Unauthorized extends Error {}

async function api (path, signal) {
  const response = await fetch(path, { headers: { authorization: `Bearer ${token ?? ''}` }, cache: 'no-store', signal })
  if (response.status === 401) throw new Unauthorized('missing or wrong API token')
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`)
  return await response.json()
}

// ---- formatting ----------------------------------------------------------------------------------------------------
const short = id => id == null ? '-' : id.length <= 16 ? id : `${id.slice(0, 8)}…${id.slice(-6)}`
const clock = ms => new Date(ms).toLocaleTimeString([], { hour12: false })
function duration (ms) {
  if (ms == null || !Number.isFinite(ms)) return '-'
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
  if (ms < 3_600_000) { const s = Math.floor((ms % 60_000) / 1000); return `${Math.floor(ms / 60_000)} min${s === 0 ? '' : ` ${s} s`}` }
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`
}

/** An element with text and attributes; `children` may hold nodes or strings. */
function el (tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null) continue
    if (name === 'dataset') Object.assign(node.dataset, value)
    else node.setAttribute(name, String(value))
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ''))
  return node
}
const pill = (state, text = state) => el('span', { class: 'pill', dataset: { state } }, text)
const peerCell = (field, id) => el('td', { class: 'mono', title: id ?? '', dataset: { field, peer: id ?? '' } }, short(id))

function setConnection (state, text = state) {
  const node = $('connection')
  node.dataset.state = state
  node.textContent = text
}

// ---- boards and missions -------------------------------------------------------------------------------------------
const previousRows = new Map()

/**
 * Replaces a table body, flashing the rows whose `data-sig` (what matters: a state, a primary, an epoch; not the
 * ages that change every second) changed since the last poll.
 */
function fillTable (table, rows) {
  const body = $(table).tBodies[0]
  const before = previousRows.get(table) ?? new Map()
  const now = new Map()
  for (const row of rows) {
    const key = row.dataset.key
    const sig = row.dataset.sig
    now.set(key, sig)
    if (before.has(key) && before.get(key) !== sig) row.classList.add('changed')
  }
  previousRows.set(table, now)
  body.replaceChildren(...rows)
}

function renderBoards (view) {
  const stateOrder = { alive: 0, suspect: 1, dead: 2 }
  const boards = [...view.boards].sort((a, b) => (stateOrder[a.state] - stateOrder[b.state]) || (b.self - a.self) || a.peerId.localeCompare(b.peerId))
  fillTable('boards', boards.map(b => el('tr', { dataset: { key: b.peerId, sig: `${b.state} ${b.roles.map(r => `${r.role}:${r.mission}`).join(',')}`, peer: b.peerId, state: b.state } },
    el('td', {}, b.board ?? '?', b.self ? el('span', { class: 'muted' }, ' (this peer)') : ''),
    peerCell('peer', b.peerId),
    el('td', { dataset: { field: 'state' }, title: b.reason }, pill(b.state), el('span', { class: 'muted' }, ` ${duration(view.at - b.stateSinceAt)}`)),
    el('td', { dataset: { field: 'arch' } }, b.arch ?? '?'),
    el('td', {}, b.cores ?? '?'),
    el('td', { dataset: { field: 'load' } }, b.load == null ? '-' : b.load.loadPerCore.toFixed(2)),
    el('td', {}, b.load == null ? '-' : `${b.load.rssMb} MB`),
    el('td', {}, b.load == null ? '-' : `${b.load.lagMs} ms`),
    el('td', {}, b.self ? '-' : `${duration(b.lastSeenMs)} ago`),
    el('td', {}, b.criu == null ? '?' : b.criu ? 'yes' : 'no'),
    el('td', { dataset: { field: 'roles' } }, ...b.roles.map(r => el('span', { class: 'role', dataset: { role: r.role }, title: r.role }, `${r.role === 'primary' ? 'P' : 'B'} ${r.mission}`)))
  )))
  const alive = view.boards.filter(b => b.state === 'alive').length
  $('boards-count').textContent = `${alive} alive of ${view.boards.length}`
}

function renderMissions (view) {
  fillTable('missions', view.missions.map(m => el('tr', { dataset: { key: m.name, sig: `${m.state} ${m.primary} ${m.backup} ${m.epoch} ${m.protected}`, mission: m.name, state: m.state } },
    el('td', { dataset: { field: 'name' } }, m.name),
    el('td', { dataset: { field: 'state' }, title: m.reason ?? '' }, pill(m.state), m.reason != null ? el('span', { class: 'muted' }, ` ${m.reason}`) : ''),
    peerCell('primary', m.primary),
    peerCell('backup', m.backup),
    el('td', { dataset: { field: 'epoch' } }, m.epoch),
    el('td', { dataset: { field: 'protected', value: String(m.protected) }, title: m.protection ?? '' },
      pill(m.protected ? 'yes' : 'no'), !m.protected && m.protection != null ? el('span', { class: 'muted' }, ` ${m.protection}`) : ''),
    el('td', { dataset: { field: 'checkpoint' } }, m.checkpoint == null ? 'none' : `#${m.checkpoint.seq} (epoch ${m.checkpoint.epoch})`),
    el('td', { dataset: { field: 'checkpoint-age' } }, m.checkpoint == null ? '-' : duration(m.checkpoint.ageMs)),
    el('td', { dataset: { field: 'replication-lag' } }, m.replicationLag == null ? '-' : `${m.replicationLag} checkpoint${m.replicationLag === 1 ? '' : 's'}${m.replicationLagMs != null ? `, ${duration(m.replicationLagMs)}` : ''}`)
  )))
  $('missions-count').textContent = String(view.missions.length)
  $('no-missions').hidden = view.missions.length > 0
}

// ---- timeline ------------------------------------------------------------------------------------------------------
const SVG = 'http://www.w3.org/2000/svg'
function svg (tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag)
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value))
  if (text != null) node.textContent = text
  return node
}

function renderTimelineChart (view) {
  const end = view.at
  const start = end - TIMELINE_WINDOW_MS
  const missions = [...new Set([...view.missions.map(m => m.name), ...view.timeline.map(e => e.mission)])]
  const left = 150
  const width = 1000
  const lane = 34
  const height = 24 + Math.max(1, missions.length) * lane
  const x = at => left + (Math.max(start, at) - start) / TIMELINE_WINDOW_MS * (width - left - 10)
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'checkpoints and failovers' })
  for (let t = 0; t <= TIMELINE_WINDOW_MS; t += 60_000) {
    const at = end - t
    chart.append(svg('line', { class: 'axis', x1: x(at), x2: x(at), y1: 14, y2: height }))
    chart.append(svg('text', { x: x(at), y: 11, 'text-anchor': t === 0 ? 'end' : 'middle' }, t === 0 ? 'now' : `-${t / 60_000} min`))
  }
  missions.forEach((name, i) => {
    const y = 24 + i * lane
    chart.append(svg('text', { class: 'label', x: 4, y: y + lane / 2 + 4 }, name.length > 22 ? `${name.slice(0, 21)}…` : name))
    chart.append(svg('line', { class: 'axis', x1: left, x2: width - 10, y1: y + lane / 2, y2: y + lane / 2 }))
    for (const e of view.timeline) {
      if (e.mission !== name || e.at < start) continue
      if (e.kind === 'checkpoint') {
        const tick = svg('line', { class: 'checkpoint', x1: x(e.at), x2: x(e.at), y1: y + 9, y2: y + lane - 9 })
        tick.append(svg('title', {}, `${clock(e.at)} ${e.text} on ${short(e.board)}`))
        chart.append(tick)
      } else {
        const mark = svg('circle', { class: e.kind === 'takeover' || e.kind === 'fencing' ? 'failover' : 'election', cx: x(e.at), cy: y + lane / 2, r: 5 })
        mark.append(svg('title', {}, `${clock(e.at)} ${e.kind} on ${short(e.board)}: ${e.text}`))
        chart.append(mark)
        if (e.epoch != null) chart.append(svg('text', { class: 'label', x: x(e.at) + 7, y: y + 10 }, `e${e.epoch}`))
      }
    }
  })
  $('timeline-chart').replaceChildren(chart)
  $('timeline-span').textContent = duration(TIMELINE_WINDOW_MS)
}

/** The timeline as a list, newest first: failovers one by one, runs of checkpoints of one epoch as one line. */
function renderTimelineList (view) {
  const rows = []
  for (const e of view.timeline) {
    const last = rows[rows.length - 1]
    if (e.kind === 'checkpoint' && last?.kind === 'checkpoint' && last.mission === e.mission && last.epoch === e.epoch && last.board === e.board) {
      last.lastSeq = e.seq
      last.lastAt = e.at
      last.count++
      continue
    }
    rows.push({ ...e, firstSeq: e.seq, lastSeq: e.seq, lastAt: e.at, count: 1 })
  }
  const items = rows.slice(-60).reverse().map(r => {
    const text = r.kind === 'checkpoint'
      ? (r.count === 1 ? `checkpoint #${r.firstSeq} (epoch ${r.epoch})` : `checkpoints #${r.firstSeq}–#${r.lastSeq} (${r.count}, epoch ${r.epoch})`)
      : r.text
    return el('li', { dataset: { kind: r.kind, mission: r.mission, epoch: r.epoch ?? '' } },
      el('span', { class: 'time' }, r.kind === 'checkpoint' && r.count > 1 ? `${clock(r.at)}–${clock(r.lastAt)}` : clock(r.at)),
      el('span', { class: 'kind', dataset: { kind: r.kind } }, r.kind),
      el('span', { class: 'mission' }, r.mission),
      el('span', { class: 'board', title: r.board ?? '' }, short(r.board)),
      text)
  })
  $('timeline').replaceChildren(...items)
}

// ---- polling -------------------------------------------------------------------------------------------------------
let servedSince = null
let eventsCursor = 0
let eventsGeneration = 0

function showUnauthorized () {
  $('token-problem').hidden = false
  setConnection('lost', 'no token')
}

async function pollDashboard () {
  for (;;) {
    try {
      const view = await api('/v1/dashboard', AbortSignal.timeout(10_000))
      const self = view.boards.find(b => b.self)
      $('served-by').textContent = `served by ${self?.board ?? '?'} ${short(view.self)}`
      $('served-by').title = view.self
      // The peer restarted: its event journal starts again at 1.
      if (servedSince != null && self != null && self.stateSinceAt !== servedSince) restartEvents()
      servedSince = self?.stateSinceAt ?? null
      renderBoards(view)
      renderMissions(view)
      renderTimelineChart(view)
      renderTimelineList(view)
      $('updated').textContent = `updated ${clock(view.at)}`
      setConnection('live')
    } catch (err) {
      if (err instanceof Unauthorized) { showUnauthorized(); return }
      setConnection('lost', 'peer unreachable, retrying')
    }
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}

function restartEvents () {
  eventsCursor = 0
  eventsGeneration++
  $('events').replaceChildren()
  void followEvents()
}

function eventItem (e) {
  return el('li', { dataset: { seq: e.seq, kind: e.kind, mission: e.mission ?? '', board: e.board } },
    el('span', { class: 'time', title: new Date(e.at).toISOString() }, clock(e.at)),
    el('span', { class: 'kind', dataset: { kind: e.kind } }, e.kind),
    el('span', { class: 'board', title: e.board }, short(e.board)),
    e.mission != null ? el('span', { class: 'mission' }, e.mission) : '',
    e.text)
}

/** The live event stream: a long poll that the peer answers as soon as an event comes. */
async function followEvents () {
  const generation = eventsGeneration
  const list = $('events')
  let first = true
  while (generation === eventsGeneration) {
    try {
      // The first call fetches the journal so far at once; the next ones wait for what comes.
      const page = await api(`/v1/events?after=${eventsCursor}&wait=${first ? 0 : EVENTS_WAIT_S}`, AbortSignal.timeout((EVENTS_WAIT_S + 10) * 1000))
      if (generation !== eventsGeneration) return
      first = false
      eventsCursor = page.next
      for (const e of page.events) list.prepend(eventItem(e))
      while (list.childElementCount > MAX_EVENTS_SHOWN) list.lastElementChild.remove()
    } catch (err) {
      if (err instanceof Unauthorized) { showUnauthorized(); return }
      await new Promise(resolve => setTimeout(resolve, 2000))
    }
  }
}

if (token == null) showUnauthorized()
else {
  void pollDashboard()
  void followEvents()
}
