// PeerConfig: the consensus timings derived from the failure detector's, and validatePeerConfig's refusals.
import t from 'tap'
import {
  ConfigError, consensusConfigFor, DEFAULT_FAILURE_DETECTOR, detectorDeadTimeMs, leaseValidityMs, validatePeerConfig,
  type FailureDetectorConfig, type PeerConfig
} from '../peer/config.ts'
import { DEFAULT_CONSENSUS_CONFIG, type ConsensusConfig } from '../consensus/types.ts'

function peerConfig (detector: Partial<FailureDetectorConfig> = {}, consensus: Partial<ConsensusConfig> = {}): PeerConfig {
  const failureDetector = { ...DEFAULT_FAILURE_DETECTOR, ...detector }
  return {
    dataDir: '/tmp/tandem-config-test',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    api: { host: '127.0.0.1', port: 0 },
    mdns: false,
    dockerHost: 'unix:///var/run/docker.sock',
    failureDetector,
    consensus: consensusConfigFor(failureDetector, consensus)
  }
}

function refusal (config: PeerConfig): string {
  try {
    validatePeerConfig(config)
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  return 'accepted'
}

t.test('the default failure detector gives the default consensus timings', async t => {
  t.same(consensusConfigFor(DEFAULT_FAILURE_DETECTOR), DEFAULT_CONSENSUS_CONFIG)
  t.equal(detectorDeadTimeMs(DEFAULT_FAILURE_DETECTOR), 1100)
  t.equal(leaseValidityMs(DEFAULT_CONSENSUS_CONFIG), 650, 'the watchdog lease ends before the consensus lease')
  const config = peerConfig()
  t.equal(validatePeerConfig(config), config, 'the defaults are valid')
})

t.test('the lease and the primary-silence wait follow the failure detector', async t => {
  const slow = consensusConfigFor({ ...DEFAULT_FAILURE_DETECTOR, suspectAfterMs: 1500, suspicionTimeoutMs: 1000 })
  t.equal(slow.leaseMs, 1600, 'suspect time + self-fence grace')
  t.equal(slow.primarySilenceMs, 2500, 'the detector\'s dead time')
  t.equal(slow.claimTimeoutMs, DEFAULT_CONSENSUS_CONFIG.claimTimeoutMs, 'the other timings keep their defaults')
  t.equal(slow.unknownPeerDeadMs, DEFAULT_CONSENSUS_CONFIG.unknownPeerDeadMs, 'a never-reported peer is dead after 3 s as before')
  t.equal(consensusConfigFor({ ...DEFAULT_FAILURE_DETECTOR, suspectAfterMs: 3000, suspicionTimeoutMs: 1000 }).unknownPeerDeadMs, 4000, 'or after the dead time when that is longer')
  t.equal(refusal(peerConfig({ suspectAfterMs: 3000, suspicionTimeoutMs: 1000 })), 'accepted', 'a slow detector (TANDEM_FD_*) still starts')
  t.equal(consensusConfigFor(DEFAULT_FAILURE_DETECTOR, { selfFenceGraceMs: 200 }).leaseMs, 800, 'an override of the grace moves the lease')
  t.equal(refusal(peerConfig({ suspectAfterMs: 1500, suspicionTimeoutMs: 1000, beatIntervalMs: 500 })), 'accepted')
})

t.test('inconsistent timings are refused with the reason', async t => {
  const cases: Array<[PeerConfig, RegExp]> = [
    [peerConfig({}, { selfFenceGraceMs: 500 }), /selfFenceGraceMs \(500\) must be below the failure detector's suspicionTimeoutMs \(500\)/],
    [peerConfig({}, { leaseMs: 1100 }), /leaseMs \(1100\) must be below the failure detector's dead time/],
    [peerConfig({}, { leaseMs: 40 }), /leaves the watchdog no lease/],
    [peerConfig({}, { primarySilenceMs: 900 }), /primarySilenceMs \(900\) must be at least the failure detector's dead time \(1100\)/],
    [peerConfig({}, { unknownPeerDeadMs: 1000 }), /unknownPeerDeadMs \(1000\) must be at least/],
    [peerConfig({}, { fetchBackoffMs: 60_000 }), /fetchBackoffMs \(60000\) must not exceed fetchBackoffMaxMs/],
    [peerConfig({}, { restartBackoffMs: 120_000 }), /restartBackoffMs \(120000\) must not exceed restartBackoffMaxMs/],
    [peerConfig({}, { claimTimeoutMs: 0 }), /consensus: claimTimeoutMs must be above 0/],
    [peerConfig({}, { announceIntervalMs: Number.NaN }), /consensus: announceIntervalMs must be a non-negative number/],
    [peerConfig({ suspectAfterMs: 300 }), /suspectAfterMs must be at least two beat intervals/],
    [peerConfig({ watchers: 0 }), /watchers must be an integer >= 1/],
    [{ ...peerConfig(), api: { host: '127.0.0.1', port: 70000 } }, /api.port must be an integer 0-65535/],
    [{ ...peerConfig(), dataDir: '' }, /dataDir must not be empty/]
  ]
  for (const [config, reason] of cases) t.match(refusal(config), reason)
})

t.test('a failure detector made slower without its consensus timings is refused', async t => {
  const config = peerConfig()
  config.failureDetector = { ...DEFAULT_FAILURE_DETECTOR, suspectAfterMs: 2000, suspicionTimeoutMs: 1000 }
  t.match(refusal(config), /primarySilenceMs \(1100\) must be at least the failure detector's dead time \(3000\)/)
})
