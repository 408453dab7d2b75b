/**
 * A reference for what `Device.apply` does to the configuration a UAPI `get` reports: private key, port,
 * fwmark, and per peer its preshared key, endpoint, keepalive and allowed IPs (a prefix has one owner, the
 * last to be given it). Peers and prefixes are listed in the order they were added, as the device lists them.
 * Statistics are not modelled.
 * @module
 */
import { clampPrivateKey, dhPublic, isZero } from "../lib/crypto.ts";
import { type Cidr, formatCidr, maskAddress } from "../lib/ip.ts";
import type { DeviceInfo, DeviceUpdate } from "../lib/uapi.ts";
import { hex } from "./target.ts";

interface PeerModel {
  publicKey: Uint8Array;
  presharedKey: Uint8Array | null;
  endpoint: DeviceInfo["peers"][number]["endpoint"];
  keepalive: number;
}

export class DeviceModel {
  privateKey: Uint8Array | null = null;
  publicKeyHex = "";
  listenPort = 0;
  fwmark = 0;
  readonly peers = new Map<string, PeerModel>();
  /** prefix text → owner's key hex, in the order each prefix got its owner. */
  readonly owners = new Map<string, { cidr: Cidr; owner: string }>();

  apply(u: DeviceUpdate): void {
    if (u.privateKey !== undefined) {
      const k = isZero(u.privateKey) ? null : clampPrivateKey(u.privateKey.slice());
      this.privateKey = k;
      this.publicKeyHex = k ? hex(dhPublic(k)) : "";
      if (k) this.#remove(this.publicKeyHex);
    }
    if (u.listenPort !== undefined) this.listenPort = u.listenPort;
    if (u.fwmark !== undefined) this.fwmark = u.fwmark;
    if (u.replacePeers) { for (const k of [...this.peers.keys()]) this.#remove(k); }
    for (const pu of u.peers) {
      const id = hex(pu.publicKey);
      if (pu.remove) {
        this.#remove(id);
        continue;
      }
      if (pu.updateOnly && !this.peers.has(id)) continue;
      if (id === this.publicKeyHex) continue;
      let peer = this.peers.get(id);
      if (!peer) {
        peer = { publicKey: pu.publicKey, presharedKey: null, endpoint: null, keepalive: 0 };
        this.peers.set(id, peer);
      }
      if (pu.presharedKey !== undefined) peer.presharedKey = isZero(pu.presharedKey) ? null : pu.presharedKey;
      if (pu.endpoint !== undefined) peer.endpoint = pu.endpoint;
      if (pu.replaceAllowedIps) this.#dropPrefixes(id);
      for (const c of pu.allowedIps) {
        const cidr = { family: c.family, addr: maskAddress(c.addr, c.prefixLen), prefixLen: c.prefixLen };
        const key = formatCidr(cidr);
        const had = this.owners.get(key);
        if (had?.owner === id) continue;
        this.owners.delete(key);
        this.owners.set(key, { cidr, owner: id });
      }
      if (pu.persistentKeepalive !== undefined) peer.keepalive = pu.persistentKeepalive;
    }
  }

  info(): DeviceInfo {
    return {
      privateKey: this.privateKey,
      listenPort: this.listenPort,
      fwmark: this.fwmark,
      peers: [...this.peers].map(([id, p]) => ({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.endpoint,
        persistentKeepalive: p.keepalive,
        lastHandshakeMs: 0,
        rxBytes: 0,
        txBytes: 0,
        allowedIps: [...this.owners.values()].filter((o) => o.owner === id).map((o) => o.cidr),
      })),
    };
  }

  #remove(id: string): void {
    this.peers.delete(id);
    this.#dropPrefixes(id);
  }

  #dropPrefixes(id: string): void {
    for (const [k, o] of this.owners) if (o.owner === id) this.owners.delete(k);
  }
}
