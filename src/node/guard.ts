/**
 * A size cap on the MQTT packets a broker sends the node, enforced from each packet's fixed header
 * as the bytes arrive: mqtt.js buffers a whole packet before it looks at it (its own
 * maximumPacketSize is MQTT 5 only, and checked after parsing), so a broker announcing a 250 MB
 * PUBLISH would otherwise have the node hold 250 MB.
 */
import type { Duplex } from 'node:stream';

/**
 * The default cap: the largest template document a qis broker accepts (64 KiB, the largest
 * message a node reads) plus its topic and header. Outcome packets are at most 512 bytes.
 */
export const MAX_INCOMING_PACKET_BYTES = 64 * 1024 + 1024;

/**
 * Follows the MQTT framing of a byte stream (fixed header byte, remaining length varint, body)
 * without keeping any of it; calls `tooLarge` once, with the announced size, for the first
 * packet whose total size is over `maxBytes` (or whose remaining length is malformed).
 */
export class FrameGuard {
  readonly #maxBytes: number;
  readonly #tooLarge: (announced: number) => void;
  /** 'type': expecting a fixed header byte; 'len': inside the remaining length; 'body': skipping. */
  #phase: 'type' | 'len' | 'body' = 'type';
  #len = 0;
  #mult = 1;
  #lenBytes = 0;
  #left = 0;
  #tripped = false;

  constructor(maxBytes: number, tooLarge: (announced: number) => void) {
    this.#maxBytes = maxBytes;
    this.#tooLarge = tooLarge;
  }

  /** Feeds the next chunk of the stream. */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length && !this.#tripped) {
      if (this.#phase === 'type') {
        i++;
        this.#phase = 'len';
        this.#len = 0;
        this.#mult = 1;
        this.#lenBytes = 0;
      } else if (this.#phase === 'len') {
        const b = chunk[i++]!;
        this.#len += (b & 0x7f) * this.#mult;
        this.#mult *= 128;
        this.#lenBytes++;
        if ((b & 0x80) !== 0) {
          if (this.#lenBytes === 4) return this.#trip(Number.POSITIVE_INFINITY); // [MQTT-2.2.3]: at most 4 bytes
        } else {
          const total = 1 + this.#lenBytes + this.#len;
          if (total > this.#maxBytes) return this.#trip(total); // before any of its body is kept
          this.#left = this.#len;
          this.#phase = this.#left === 0 ? 'type' : 'body';
        }
      } else {
        const n = Math.min(this.#left, chunk.length - i);
        i += n;
        this.#left -= n;
        if (this.#left === 0) this.#phase = 'type';
      }
    }
  }

  #trip(announced: number): void {
    this.#tripped = true;
    this.#tooLarge(announced);
  }
}

/**
 * Watches `stream` (before mqtt.js pipes it into its parser) and destroys it with `error(size)`
 * as soon as a packet announces more than `maxBytes`: the parser then holds at most the one
 * chunk the socket already read.
 */
export function guardStream(stream: Duplex, maxBytes: number, error: (announced: number) => Error): Duplex {
  const guard = new FrameGuard(maxBytes, (announced) => stream.destroy(error(announced)));
  stream.on('data', (chunk: Buffer) => guard.push(chunk));
  return stream;
}
