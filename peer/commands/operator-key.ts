// `tandem operator-key create --out FILE` / `tandem operator-key public FILE`: the operator's Ed25519 key pair, whose
// signature every board requires to deploy, remove or move a mission and to revoke a board (consensus/authority.ts).
import { readFile, writeFile } from 'node:fs/promises'
import { createOperatorKeyPair, formatPublicKey, OperatorSigner } from '../../consensus/authority.ts'
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'

const USAGE = `usage: tandem operator-key create --out FILE [--comment TEXT]
       tandem operator-key public FILE

  create   writes the private key to FILE (mode 0600, never overwritten) and its public key to FILE.pub;
           give FILE.pub to every board (peer start --operator-pub FILE.pub) and keep FILE with the operator
  public   prints the public key line of a private key file (to append to the boards' --operator-pub file)`

/** Writes a new key pair to `path` and `path.pub`; returns the public key. */
export async function createOperatorKeyFiles (path: string, comment = ''): Promise<string> {
  const { privatePem, publicKey } = createOperatorKeyPair()
  try {
    await writeFile(path, privatePem, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`--out: ${path} exists; not overwriting an operator key`)
    throw err
  }
  await writeFile(`${path}.pub`, formatPublicKey(publicKey, comment), { mode: 0o644 })
  return publicKey
}

/** The signer of an operator private key file; an unreadable or wrong file is a UsageError. */
export async function loadOperatorSigner (path: string): Promise<OperatorSigner> {
  let text: string
  try { text = await readFile(path, 'utf8') } catch (err) { throw new UsageError(`cannot read operator key ${path}: ${(err as Error).message}`) }
  try { return new OperatorSigner(text) } catch (err) { throw new UsageError(`${path}: ${(err as Error).message}`) }
}

export const command: Command = {
  async run (argv) {
    const [sub, ...rest] = argv
    if (sub === '--help' || sub === '-h' || rest.includes('--help')) { console.log(USAGE); return 0 }
    if (sub === 'create') {
      const { values, positionals } = parseFlags(rest, { out: { type: 'string' }, comment: { type: 'string' } }, true)
      if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0] as string}'`)
      if (values.out == null || values.out === '') throw new UsageError(`create needs --out FILE\n${USAGE}`)
      const publicKey = await createOperatorKeyFiles(values.out, values.comment ?? '')
      console.error(`operator key written to ${values.out} (keep it off the boards), public key ${publicKey} in ${values.out}.pub (give it to every board: --operator-pub)`)
      return 0
    }
    if (sub === 'public') {
      const { positionals } = parseFlags(rest, {}, true)
      if (positionals.length !== 1) throw new UsageError(`public needs one FILE\n${USAGE}`)
      process.stdout.write(formatPublicKey((await loadOperatorSigner(positionals[0] as string)).publicKey))
      return 0
    }
    throw new UsageError(sub == null ? `missing subcommand\n${USAGE}` : `unknown subcommand '${sub}'\n${USAGE}`)
  }
}
