// Shared shape of a CLI subcommand.

/** Bad flags or input: the CLI prints the message and exits with code 2. */
export class UsageError extends Error {}

export interface Command {
  /** Runs the command with the arguments after its name; resolves to the process exit code. */
  run (argv: string[]): Promise<number>
}
