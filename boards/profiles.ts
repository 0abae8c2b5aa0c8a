// Board profiles: the facts about a board that matter for placing a mission on it.
import type { Architecture } from '../manifest/manifest.ts'

export interface BoardProfile {
  /** Stable identifier used on the command line (`--board`) and in gossip. */
  name: string
  displayName: string
  arch: Architecture
  cores: number
  memoryMb: number
  cpuMhz: number | null
  /** Where the figures come from or what limits the board, for people reading `tandem status`. */
  notes: string
}

/** The four boards of the original platform (Lee and Kang, MobiSys 2017) and generic hosts. */
export const BOARD_PROFILES: readonly BoardProfile[] = [
  {
    name: 'intel-edison',
    displayName: 'Intel Edison',
    arch: 'ia32',
    cores: 2,
    memoryMb: 1024,
    cpuMhz: 500,
    notes: 'Atom Z34xx dual core (32-bit Yocto userland), 4 GB eMMC'
  },
  {
    name: 'raspberry-pi-b',
    displayName: 'Raspberry Pi Model B',
    arch: 'arm',
    cores: 1,
    memoryMb: 512,
    cpuMhz: 700,
    notes: 'BCM2835 ARM1176JZF-S (ARMv6), 512 MB on rev 2 boards'
  },
  {
    name: 'beaglebone-black',
    displayName: 'BeagleBone Black',
    arch: 'arm',
    cores: 1,
    memoryMb: 512,
    cpuMhz: 1000,
    notes: 'TI AM335x Cortex-A8 (ARMv7), 4 GB eMMC'
  },
  {
    name: 'odroid-xu3',
    displayName: 'Odroid XU3',
    arch: 'arm',
    cores: 8,
    memoryMb: 2048,
    cpuMhz: 2000,
    notes: 'Exynos 5422 big.LITTLE: 4x Cortex-A15 2.0 GHz + 4x Cortex-A7 1.4 GHz'
  },
  {
    name: 'generic-amd64',
    displayName: 'Generic amd64 host',
    arch: 'x64',
    cores: 0,
    memoryMb: 0,
    cpuMhz: null,
    notes: 'cores and memory are measured on the host'
  },
  {
    name: 'generic-arm64',
    displayName: 'Generic arm64 host',
    arch: 'arm64',
    cores: 0,
    memoryMb: 0,
    cpuMhz: null,
    notes: 'cores and memory are measured on the host'
  }
]

export function boardNames (): string[] {
  return BOARD_PROFILES.map(profile => profile.name)
}

export function findBoard (name: string): BoardProfile | undefined {
  return BOARD_PROFILES.find(profile => profile.name === name)
}

/** Generic profiles have no fixed figures: the host's measured cores and memory fill them in. */
export function isGeneric (profile: BoardProfile): boolean {
  return profile.cores === 0
}
