// Builds the counter mission image (FROM tandem/node-base, so offline) into a board's daemon.
import type Docker from 'dockerode'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export const COUNTER_DIR = dirname(fileURLToPath(import.meta.url))

export async function buildCounterImage (docker: Docker, tag = 'tandem/counter:latest'): Promise<string> {
  const stream = await docker.buildImage({ context: COUNTER_DIR, src: ['Dockerfile', 'app.js'] }, { t: tag, pull: false, rm: true } as Docker.ImageBuildOptions)
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
      const failed = output?.find(o => o.error != null)
      if (err != null) reject(err)
      else if (failed != null) reject(new Error(`building ${tag} failed: ${String(failed.error)}`))
      else resolve()
    })
  })
  return (await docker.getImage(tag).inspect()).Id
}
