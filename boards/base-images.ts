// The base images scripts/provision.sh builds on this host (tandem/busybox, tandem/node-base): where their cache is,
// and which content each must have. Read by `tandem doctor` and by the simulated boards that load them.
import { readFile } from 'node:fs/promises'

/** Written by scripts/provision.sh: `docker save` of the base images, and one `ref contentHash` line per image. */
export const BASE_IMAGE_CACHE_TAR = '/var/lib/tandem/images/base-images.tar'
export const BASE_IMAGE_CACHE_MANIFEST = '/var/lib/tandem/images/base-images.manifest'
export const CONTENT_LABEL = 'tandem.content'

export interface BaseImage { ref: string, contentHash: string }

export class BaseImageCacheError extends Error {
  override name = 'BaseImageCacheError'
}

/** The base images scripts/provision.sh built, from its manifest. */
export async function readBaseImageManifest (manifestPath = BASE_IMAGE_CACHE_MANIFEST): Promise<BaseImage[]> {
  let text: string
  try {
    text = await readFile(manifestPath, 'utf8')
  } catch {
    throw new BaseImageCacheError(`no base image cache (${manifestPath}): run scripts/provision.sh as root`)
  }
  const images = text.split('\n').filter(line => line.trim() !== '').map(line => {
    const [ref, contentHash] = line.trim().split(/\s+/)
    if (ref == null || contentHash == null) throw new BaseImageCacheError(`malformed line in ${manifestPath}: ${line}`)
    return { ref, contentHash }
  })
  if (images.length === 0) throw new BaseImageCacheError(`${manifestPath} lists no images: run scripts/provision.sh`)
  return images
}
