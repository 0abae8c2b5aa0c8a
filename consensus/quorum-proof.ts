// Quorum certificates: the signed votes that prove an epoch was elected. Each granted vote is signed by its voter
// (its board's identity key) over a canonical statement; the winner's record and its fence carry the votes that
// made its quorum, and every board checks them before it adopts the epoch or obeys the fence. Pure: signing and
// verifying are injected (VoteKeys), so the machine and the seeded simulator stay deterministic.
import { loneClaimant, quorumReached } from './quorum.ts'

/**
 * What signs and verifies votes. `sign`: this board's signature of a statement. `verify`: `sig` is `voter`'s
 * signature of `statement` (the voter's public key is its peer id). Both synchronous (Ed25519 in the daemon).
 */
export interface VoteKeys {
  sign: (statement: string) => string
  verify: (voter: string, statement: string, sig: string) => boolean
}

/**
 * The proof of one epoch: the election's basis (its epoch, view and primary) and the granted votes, each
 * `[voter, signature]`. `replaces`: a two-board primary replaced its partner, proven exited, with a joiner's vote
 * (startPartnerReplacement in primary.ts): the proof is the primary's and the joiner's votes on the basis {primary,
 * partner}, and the new view is {primary, joiner}.
 */
export interface QuorumProof {
  basis: number
  view: string[]
  primary: string | null
  votes: Array<[string, string]>
  replaces?: string
}

/** Most votes a proof carries (a view's voters; more is refused as malformed). */
export const MAX_PROOF_VOTES = 64

const STATEMENT_PREFIX = 'tandem-vote/1\n'

/** What a granted vote signs: this candidate may take this epoch of this deployment, elected on this basis. */
export function voteStatement (mission: string, deployId: string, epoch: number, candidate: string, basis: number): string {
  return STATEMENT_PREFIX + JSON.stringify([mission, deployId, epoch, candidate, basis])
}

/** What a proof is checked against: the epoch it claims and its candidate, and what this board knows. */
export interface ProofClaim {
  mission: string
  deployId: string
  epoch: number
  /** The elected primary (the candidate the votes name). */
  candidate: string
  /** The new epoch's view, when known (an announce; a fence carries none). */
  view?: readonly string[]
}

/**
 * The record this board knows (the anchor), or null when it knows none it can check against. `vouched`: members
 * that vouch for the claimed epoch otherwise than by a vote in the proof: this board's own grant of that epoch to
 * that candidate, and members that announced the record (every board adopts and relays only proven epochs). A
 * board that missed elections counts them with the proof's signers toward its known view's quorum. `self`: this
 * board; in a known view of one or two it counts as vouching itself (its partner's word is what two-board mode
 * trusts anyway: the partner may take the mission over alone).
 */
export interface ProofAnchor {
  epoch: number
  view: readonly string[]
  primary: string | null
  vouched?: ReadonlySet<string>
  self?: string
  /** The anchor's own proof, checked when it was adopted: its basis (epoch, view, primary) is known here too. */
  proof?: QuorumProof
}

/** What the machine supplies to the check: revoked boards, and the placement used for the lone claimant. */
export interface ProofFacts {
  keys: VoteKeys
  revoked: ReadonlySet<string>
  placementOk: (peerId: string) => boolean
}

function sameMembers (a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  const set = new Set(a)
  return b.every(p => set.has(p))
}

/** The voters of `proof` whose signature of the claim's statement verifies. */
export function validSigners (keys: VoteKeys, claim: ProofClaim, proof: QuorumProof): Set<string> {
  const statement = voteStatement(claim.mission, claim.deployId, claim.epoch, claim.candidate, proof.basis)
  const signers = new Set<string>()
  for (const [voter, sig] of proof.votes) if (!signers.has(voter) && keys.verify(voter, statement, sig)) signers.add(voter)
  return signers
}

function reached (voters: readonly string[], basis: { mission: string, primary: string | null }, facts: ProofFacts, candidate: string, signers: Set<string>): boolean {
  const counted = voters.filter(p => !facts.revoked.has(p))
  return quorumReached({
    voters: counted,
    loneClaimant: () => loneClaimant({ mission: basis.mission, view: voters, primary: basis.primary }, facts.placementOk),
    heldBack: () => false
  }, candidate, signers)
}

/**
 * Whether `proof` proves the claim. Its votes must be valid signatures of the claim's statement by members of its
 * basis view, reaching that view's quorum (as the election counts it: a majority, all of a view of two, or its lone
 * claimant). Against the anchor (the record this board knows): a proof on that very epoch must carry its view and
 * primary; a proof on another basis (this board missed elections, its known view is not the basis) must also reach
 * the quorum of the known view with its signers and those who vouch for it, so a member cannot invent the basis
 * view of an epoch nobody here saw. A partner
 * replacement proves itself with both members' votes on a two-board basis whose primary is the candidate.
 */
export function proves (facts: ProofFacts, claim: ProofClaim, proof: QuorumProof | undefined, anchor: ProofAnchor | null): boolean {
  if (proof === undefined || proof.basis >= claim.epoch || proof.votes.length > MAX_PROOF_VOTES) return false
  const signers = validSigners(facts.keys, claim, proof)
  const anchored = (): boolean => {
    if (anchor === null || proof.basis === anchor.epoch) return true
    // Elected on the same basis as the known epoch (two elections raced from one record, and the known winner's
    // view grew since): that basis's view and primary are known from the known epoch's proof. (Simulated, seed 130:
    // epoch 5 won on basis 4 with a view of 4, epoch 6 won on basis 4 by a majority of its 3, and the boards at 5
    // refused 6 as unanchored: two primaries for good.)
    const known = anchor.proof
    if (known !== undefined && known.replaces === undefined && proof.replaces === undefined && proof.basis === known.basis &&
      sameMembers(proof.view, known.view) && proof.primary === known.primary) return true
    const vouched = new Set([...signers, ...(anchor.vouched ?? [])])
    if (anchor.self !== undefined && anchor.view.length <= 2 && anchor.view.includes(anchor.self)) vouched.add(anchor.self)
    return reached(anchor.view, { mission: claim.mission, primary: anchor.primary }, facts, claim.candidate, vouched)
  }
  if (anchor !== null && proof.basis === anchor.epoch && (!sameMembers(proof.view, anchor.view) || proof.primary !== anchor.primary)) return false
  if (proof.replaces !== undefined) {
    const partner = proof.replaces
    const joiner = [...signers].find(p => p !== claim.candidate && p !== partner)
    if (proof.view.length !== 2 || proof.primary !== claim.candidate || !proof.view.includes(partner) || !proof.view.includes(claim.candidate) ||
      joiner === undefined || !signers.has(claim.candidate) || facts.revoked.has(joiner)) return false
    if (claim.view !== undefined && !sameMembers(claim.view, [claim.candidate, joiner])) return false
    return anchored()
  }
  const members = new Set(proof.view)
  const counted = new Set([...signers].filter(p => members.has(p)))
  return reached(proof.view, { mission: claim.mission, primary: proof.primary }, facts, claim.candidate, counted) && anchored()
}
