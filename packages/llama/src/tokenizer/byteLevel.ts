// GPT-2's byte-level alphabet (used by Llama-3's tokenizer.json): every byte gets a printable
// character, so BPE runs on strings with no spaces or control characters in them.
// Printable Latin-1 bytes stand for themselves; the other 68 take U+0100 onwards, in byte order.

const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);

/** BYTE_CHAR[b]: the character that stands for byte b. */
export const BYTE_CHAR: readonly string[] = (() => {
  let next = 0x100;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : next++));
})();

/** The byte a character of the alphabet stands for. */
export const CHAR_BYTE: ReadonlyMap<string, number> = new Map(BYTE_CHAR.map((c, b) => [c, b]));

/** A string's UTF-8 bytes, written in the alphabet. */
export function toByteLevel(text: string, utf8: TextEncoder): string {
  let out = '';
  for (const b of utf8.encode(text)) out += BYTE_CHAR[b];
  return out;
}
