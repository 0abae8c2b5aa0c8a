// Builds the counter mission image (FROM tandem/node-base, so offline) into a board's daemon.
import type Docker from 'dockerode'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildImage } from '../../harness/simulated-docker.ts'

export const COUNTER_DIR = dirname(fileURLToPath(import.meta.url))

export async function buildCounterImage (docker: Docker, tag = 'tandem/counter:latest'): Promise<string> {
  return await buildImage(docker, COUNTER_DIR, ['Dockerfile', 'app.js'], tag)
}
