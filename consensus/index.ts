// Public surface of the consensus part: the state machine, its message validation, the manifest parser.
export { ClusterMachine, majority, type MachineInit, type SelfInfo } from './machine.ts'
export { validateMessage, validateRecord, compareCheckpoints } from './messages.ts'
export {
  parseManifest, validateMissionSpec, imageFor, ManifestError, ARCHITECTURES, DEFAULT_CHECKPOINT_INTERVAL_MS,
  type MissionSpec, type Placement, type Architecture
} from './manifest.ts'
export { hrwRank } from './hrw.ts'
export {
  DEFAULT_CONSENSUS_CONFIG,
  type Action, type CheckpointRef, type ConsensusConfig, type ConsensusMessage, type LocalEvent, type MissionRecord,
  type MissionState, type MissionView, type PeerInfo, type PeerState, type PersistedMission, type PersistedState
} from './types.ts'
