// The one dockerode factory and the Docker/CRIU probes (no daemon needed: a missing socket and fake criu commands).
import t from 'tap'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { dockerFromHost, probeCriu, probeDocker, unixDockerHost, versionAtLeast } from '../checkpoint/docker-host.ts'

t.test('dockerFromHost: unix sockets (any path, through unixDockerHost), loopback TCP only', async t => {
  for (const path of ['/var/run/docker.sock', '/tmp/a b/#x?y%z/docker.sock']) {
    t.equal((dockerFromHost(unixDockerHost(path)) as unknown as { modem: { socketPath: string } }).modem.socketPath, path, path)
  }
  const tcp = (dockerFromHost('tcp://127.0.0.1:2376') as unknown as { modem: { host: string, port: number } }).modem
  t.same({ host: tcp.host, port: Number(tcp.port) }, { host: '127.0.0.1', port: 2376 })
  t.throws(() => dockerFromHost('tcp://10.0.0.1:2375'), /only loopback daemons are allowed/)
  t.throws(() => dockerFromHost('ssh://host'), /unsupported dockerHost/)
})

t.test('probeDocker: no daemon at the socket is an unavailable Docker with the reason', async t => {
  const probe = await probeDocker(dockerFromHost(unixDockerHost('/nonexistent/docker.sock')), { timeoutMs: 2000 })
  t.equal(probe.available, false)
  if (!probe.available) t.match(probe.error.message, /ENOENT/)
})

t.test('probeCriu: version, missing command, and criu check when asked', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-docker-host-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const fake = join(dir, 'criu')
  await writeFile(fake, '#!/bin/sh\nif [ "$1" = --version ]; then echo "Version: 4.1.1"; exit 0; fi\necho "Looks good but: no kernel"; exit 1\n')
  await chmod(fake, 0o755)
  t.same(await probeCriu({ command: fake }), { version: '4.1.1', versionError: null, missing: false, check: null }, 'no check unless asked')
  const checked = await probeCriu({ command: fake, check: true })
  t.equal(checked.check?.exitCode, 1)
  t.match(checked.check?.stdout, 'no kernel')
  const missing = await probeCriu({ command: join(dir, 'nope'), check: true })
  t.same({ version: missing.version, missing: missing.missing, check: missing.check }, { version: null, missing: true, check: null })
  t.ok(versionAtLeast('4.1.1', '4.1'))
  t.notOk(versionAtLeast('4.0.9', '4.1'))
})
