/**
 * Endpoints named by DNS, resolved again while a peer's handshakes keep failing (issue 17). wg(8) resolves a
 * name once, when it is set; a peer whose address then changes (a dynamic-DNS home router, a server moved to
 * another host) is lost until someone runs wireguard-tools' contrib reresolve-dns.sh. Here the CLI hands the
 * name to the daemon with the endpoint (typetun's UAPI key `endpoint_name=`, kept in `peer.endpointName`), and
 * the daemon looks it up again when an initiation goes unanswered for REKEY_TIMEOUT, at most as often as the
 * back-off in lib/timers.ts (Timers.resolveDue) allows: the policy is the device's, the lookup is here.
 *
 * The lookup is node:dns `lookup` (getaddrinfo semantics, /etc/hosts first, read afresh each time by both Deno
 * and Bun; the first answer in the resolver's order, as wg takes it), asynchronous, so the data loop never
 * waits for a resolver. One lookup per peer is in flight at a time; a result is used only if the peer still
 * exists and still has that name (a `wg set … endpoint` meanwhile wins).
 * @module
 */
import { lookup as dnsLookup } from "node:dns/promises";
import type { Device } from "../lib/device.ts";
import { keyToBase64 } from "../lib/encoding.ts";
import { Endpoint, parseAddress, splitHostPort } from "../lib/ip.ts";
import type { Peer } from "../lib/peer.ts";
import type { Logger } from "./log.ts";

/** Resolves a host name to one address in text form (the first getaddrinfo answer). */
export type Lookup = (host: string) => Promise<string>;

const systemLookup: Lookup = async (host) => (await dnsLookup(host, { verbatim: true })).address;

export class EndpointResolver {
  readonly #log: Logger;
  readonly #lookup: Lookup;
  /** Peers with a lookup in flight. */
  readonly #busy = new Set<Peer>();
  /** Lookups started, and endpoints they changed (for tests and the log). */
  lookups = 0;
  changes = 0;

  /** Installs itself as the device's `onResolve`. */
  constructor(device: Device, log: Logger, lookup: Lookup = systemLookup) {
    this.#log = log;
    this.#lookup = lookup;
    device.onResolve = (peer) => void this.resolve(peer);
  }

  /** Looks up the peer's endpoint name and moves its endpoint if the address changed. Never throws. */
  async resolve(peer: Peer): Promise<void> {
    const name = peer.endpointName;
    const hp = name === null ? null : splitHostPort(name);
    if (hp === null || this.#busy.has(peer)) return;
    this.#busy.add(peer);
    this.lookups++;
    const who = `peer ${keyToBase64(peer.publicKey)}`;
    try {
      const address = await this.#lookup(hp.host);
      if (peer.dead || peer.endpointName !== name) return;
      const addr = parseAddress(address);
      if (addr === null) throw new Error(`not an address: ${address}`);
      if (peer.endpoint?.matches(addr, hp.port)) {
        this.#log.debug(`${who}: ${name} still resolves to ${peer.endpoint}`);
        return;
      }
      const next = new Endpoint(addr.length === 4 ? 4 : 6, addr, hp.port);
      this.#log.info(`${who}: handshakes failing and ${name} now resolves to ${next} (was ${peer.endpoint})`);
      peer.endpoint = next;
      this.changes++;
    } catch (e) {
      this.#log.info(`${who}: resolving ${name} again failed: ${(e as Error).message}`);
    } finally {
      this.#busy.delete(peer);
    }
  }
}
