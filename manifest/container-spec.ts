// What a mission's container is created from: the manifest's MissionSpec, resolved for one board (its image there).
// One type for the missions layer (peer/missions/ports.ts) and the runtime that creates it (checkpoint/runtime.ts).

export interface ContainerSpec {
  mission: string
  /** An image present on this board (name:tag or id). Never pulled. */
  image: string
  cmd?: string[]
  entrypoint?: string[]
  env?: string[]
  workingDir?: string
  user?: string
  /** Container path of the mission's data directory, bind-mounted from the host. Default `/data`; null: none. */
  dataPath?: string | null
  memoryBytes?: number
}
