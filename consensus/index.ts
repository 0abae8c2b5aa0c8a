// Public surface of the consensus part: the state machine, its message validation, the manifest parser.
//
// Driving a ClusterMachine (the daemon's side of the contract):
// - new ClusterMachine({ self, now, config?, persisted }) with the last persisted state; then apply takeActions().
//   `self` (SelfInfo) is read live: update its canRun (Docker answers), canCheckpoint (Docker + CRIU), images and
//   fetchingImages (normalizeImageRef'd refs) in place as they change, then tick.
// - tick(now) every ~50 ms; peerChanged(now, info) on every detector change and whenever a peer's canRun,
//   canCheckpoint, images or fetchingImages change (with arch/board/memoryMb; gone: true when the peer turned dead
//   because a redial was refused, only if a watchdog kills that peer's containers when its daemon exits; any other
//   change, including back to alive, with gone absent or false);
//   receive(now, signerPeerId, validateMessage(JSON.parse(data))) for each gossip message that validates;
//   local(now, event) for deploy/remove/move requests and container/checkpoint/fetch/image results.
// - after every call apply takeActions() in order: `persist` durably before the next action; `publish` as JSON on
//   the mission topic; `startFresh` answers with containerStarted or startFailed, `restore` with containerStarted or
//   restoreFailed (same epoch; both failures with a cause: image-missing, criu, docker, other);
//   `checkpoint` answers with checkpointTaken (cid) or checkpointFailed, `stop` = dump without leaving it running;
//   `fetchCheckpoint` answers with checkpointFetched or fetchFailed; `storeImage` with imageStored (cid) or
//   imageStoreFailed; `fetchImage` by adding the image to SelfInfo.images (fetchingImages meanwhile) or with
//   imageFetchFailed; `stopContainer` and `forget` need no answer;
//   containerExited only for exits the machine did not ask for; `runningEpoch` renews the running container's token;
//   `event` is a MachineEvent (consensus/events.ts): describe(event) words it, parseMissionEvent checks one received.
// - view(now) for status: state (incl. backoff/blocked with `reason`), restarts, lastFailure, protected/protection.
export { ClusterMachine, majority, type MachineInit, type SelfInfo } from './machine.ts'
export { validateMessage, validateRecord, compareCheckpoints, tombstoneSpec } from './messages.ts'
export {
  parseManifest, validateMissionSpec, imageFor, normalizeImageRef, ManifestError, ARCHITECTURES, DEFAULT_CHECKPOINT_INTERVAL_MS,
  MAX_MANIFEST_BYTES, MAX_ENV_ENTRIES, MAX_COMMAND_ARGS, MAX_PLACEMENT_BOARDS,
  type MissionSpec, type Placement, type Architecture
} from '../manifest/manifest.ts'
export { hrwRank } from './hrw.ts'
export {
  describe, describeStopReason, parseMissionEvent, MISSION_EVENT_KINDS,
  type EventOf, type MachineEvent, type MissionEventData, type MissionEventKind, type PeerEvent, type StopReason
} from './events.ts'
export {
  DEFAULT_CONSENSUS_CONFIG,
  type Action, type AnnouncedClaimState, type CheckpointRef, type ConsensusConfig, type ConsensusMessage, type FailureCause, type LocalEvent,
  type MissionFailure, type MissionProtection, type MissionRecord, type MissionState, type MissionSnapshot, type PeerInfo, type PeerState,
  type PersistedMission, type PersistedState
} from './types.ts'
