/**
 * A log line's text as styled segments: ANSI SGR colours and styles through anser, OSC 8
 * hyperlinks kept only for `http:` and `https:` targets.
 *
 * The result is data (text plus style), rendered as React text nodes: no log text ever becomes
 * HTML. anser knows only CSI sequences, so OSC sequences are taken out first: an OSC 8 link's
 * start and end become markers (control characters that the text itself can no longer hold,
 * since control characters are removed beforehand), other OSC sequences (window titles) and
 * two-byte escapes are dropped, and the markers are found again in anser's segments.
 */
import Anser from "anser";

export interface Segment {
  text: string;
  /** A CSS colour (`var(--bl-ansi-red)`, `rgb(…)`), or undefined for the default. */
  fg?: string;
  bg?: string;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
  strike?: boolean;
  /** An OSC 8 hyperlink's target (http or https only). */
  href?: string;
}

const ESC = "\u001b";
/** OSC: `ESC ] … BEL` or `ESC ] … ESC \`; unterminated, to the end of the line. */
const OSC = /\u001b\](.*?)(?:\u0007|\u001b\\|$)/gs;
/** Markers for a link's start (`\u0001<n>\u0002`) and end (`\u0003`), safe once controls are gone. */
const MARK = /\u0001(\d+)\u0002|\u0003/g;
/** C0 controls but TAB, and DEL: never shown. */
const CONTROLS = /[\u0000-\u0008\u000a-\u001f\u007f]/g;
/** The same but ESC (read by the parsers) and BEL (ends an OSC). */
const CONTROLS_BUT_ESCAPES = /[\u0000-\u0006\u0008\u000a-\u001a\u001c-\u001f\u007f]/g;
/** After the OSC pass: the controls left, but the link markers. */
const CONTROLS_BUT_MARKS = /[\u0000\u0004-\u0008\u000a-\u001a\u001c-\u001f\u007f]/g;

function safeHref(uri: string): string | undefined {
  try {
    const url = new URL(uri);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/** The xterm 256-colour palette entry `n` (16-255) as `rgb(…)`. */
function palette(n: number): string {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}

function colour(klass: string | null, truecolor: string | null): string | undefined {
  if (!klass) return undefined;
  if (klass === "ansi-truecolor") return truecolor ? `rgb(${truecolor})` : undefined;
  const p = /^ansi-palette-(\d+)$/.exec(klass);
  if (p) return palette(Number(p[1]));
  return `var(--bl-${klass})`; // the 16 named colours follow the theme
}

/** Splits `text` into styled segments. Plain text (no ESC) is one segment, with no parsing. */
export function parseAnsi(text: string): Segment[] {
  if (!text.includes(ESC)) {
    const plain = text.replace(CONTROLS, "");
    return plain ? [{ text: plain }] : [];
  }
  const links: string[] = [];
  let marked = text.replace(CONTROLS_BUT_ESCAPES, "").replace(OSC, (_, body: string) => {
    const link = /^8;[^;]*;(.*)$/s.exec(body);
    if (!link) return ""; // a title or another OSC: not text
    const target = link[1]!;
    if (target === "") return "\u0003";
    links.push(target);
    return `\u0001${links.length - 1}\u0002`;
  });
  // Two-byte escapes (`ESC x`, anything but a CSI's `[`) and a dangling ESC are not text either.
  marked = marked.replace(/\u001b(?!\[)[\s\S]?/g, "").replace(CONTROLS_BUT_MARKS, "");

  const chunks = Anser.ansiToJson(marked, { use_classes: true, remove_empty: true });
  const segments: Segment[] = [];
  let href: string | undefined;
  for (const chunk of chunks) {
    const style: Omit<Segment, "text"> = {};
    const fg = colour(chunk.fg, chunk.fg_truecolor);
    const bg = colour(chunk.bg, chunk.bg_truecolor);
    if (fg) style.fg = fg;
    if (bg) style.bg = bg;
    for (const decoration of chunk.decorations ?? []) {
      if (decoration === "bold") style.bold = true;
      else if (decoration === "dim") style.dim = true;
      else if (decoration === "italic") style.italic = true;
      else if (decoration === "underline") style.underline = true;
      else if (decoration === "strikethrough") style.strike = true;
    }
    let last = 0;
    const push = (end: number) => {
      const piece = chunk.content.slice(last, end);
      if (piece) segments.push(href ? { text: piece, ...style, href } : { text: piece, ...style });
    };
    for (const m of chunk.content.matchAll(MARK)) {
      push(m.index);
      last = m.index + m[0].length;
      href = m[1] === undefined ? undefined : safeHref(links[Number(m[1])]!);
    }
    push(chunk.content.length);
  }
  return segments;
}
