// `tandem doctor`: what this host has and lacks to run missions with checkpoints, and how to fix it.
import type { Command } from './command.ts'
import { parseFlags } from './args.ts'
import { DEFAULT_DOCKER_HOST, formatDoctorReport, runDoctor } from '../../boards/doctor.ts'

const USAGE = `usage: tandem doctor [--docker-host URL] [--json]

  --docker-host URL  the Docker daemon to check (default $DOCKER_HOST, else ${DEFAULT_DOCKER_HOST})
  --json             print the report as JSON

Exit status: 0 when the host can run missions with checkpoints, 1 when something is missing.`

export const command: Command = {
  async run (argv) {
    const { values } = parseFlags(argv, {
      'docker-host': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    })
    if (values.help === true) {
      console.log(USAGE)
      return 0
    }
    const report = await runDoctor(values['docker-host'] != null ? { dockerHost: values['docker-host'] } : {})
    console.log(values.json === true ? JSON.stringify(report, null, 2) : formatDoctorReport(report))
    return report.ok ? 0 : 1
  }
}
