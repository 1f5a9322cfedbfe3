/**
 * The viewer's stylesheet: every selector under `.bl-root` and every class prefixed `bl-`, so
 * nothing leaks into the host app (and the host's own element rules meet only `bl-` classes
 * that set what they need). Colours are CSS variables on `.bl-root`: override any of them on
 * the component (`style` or a class of yours) to theme it. `data-theme="light" | "dark"` picks
 * a palette; `auto` follows `prefers-color-scheme`.
 *
 * The component renders it as a React 19 `<style href precedence>`, which React hoists into
 * the document's head once, however many viewers there are, with SSR too.
 */

const LIGHT = `
  --bl-bg: #ffffff;
  --bl-fg: #1f2328;
  --bl-muted: #59636e;
  --bl-border: #d1d9e0;
  --bl-toolbar-bg: #f6f8fa;
  --bl-row-hover: #f0f3f6;
  --bl-highlight: #fff8c5;
  --bl-mark: #fae17d;
  --bl-mark-current: #fb8f44;
  --bl-stderr: #b35900;
  --bl-system: #0550ae;
  --bl-link: #0969da;
  --bl-accent: #0969da;
  --bl-accent-fg: #ffffff;
  --bl-running: #9a6700;
  --bl-ready: #1a7f37;
  --bl-failed: #cf222e;
  --bl-notice-bg: #fff8c5;
  --bl-error-bg: #ffebe9;
  --bl-ansi-black: #24292f;
  --bl-ansi-red: #cf222e;
  --bl-ansi-green: #116329;
  --bl-ansi-yellow: #4d2d00;
  --bl-ansi-blue: #0969da;
  --bl-ansi-magenta: #8250df;
  --bl-ansi-cyan: #1b7c83;
  --bl-ansi-white: #6e7781;
  --bl-ansi-bright-black: #57606a;
  --bl-ansi-bright-red: #a40e26;
  --bl-ansi-bright-green: #1a7f37;
  --bl-ansi-bright-yellow: #633c01;
  --bl-ansi-bright-blue: #218bff;
  --bl-ansi-bright-magenta: #a475f9;
  --bl-ansi-bright-cyan: #3192aa;
  --bl-ansi-bright-white: #8c959f;
`;

const DARK = `
  --bl-bg: #0d1117;
  --bl-fg: #e6edf3;
  --bl-muted: #9198a1;
  --bl-border: #3d444d;
  --bl-toolbar-bg: #151b23;
  --bl-row-hover: #161b22;
  --bl-highlight: #3b2e00;
  --bl-mark: #7a5c00;
  --bl-mark-current: #bd561d;
  --bl-stderr: #f0883e;
  --bl-system: #79c0ff;
  --bl-link: #4493f8;
  --bl-accent: #1f6feb;
  --bl-accent-fg: #ffffff;
  --bl-running: #d29922;
  --bl-ready: #3fb950;
  --bl-failed: #f85149;
  --bl-notice-bg: #2d2300;
  --bl-error-bg: #3c1618;
  --bl-ansi-black: #484f58;
  --bl-ansi-red: #ff7b72;
  --bl-ansi-green: #3fb950;
  --bl-ansi-yellow: #d29922;
  --bl-ansi-blue: #58a6ff;
  --bl-ansi-magenta: #bc8cff;
  --bl-ansi-cyan: #39c5cf;
  --bl-ansi-white: #b1bac4;
  --bl-ansi-bright-black: #6e7681;
  --bl-ansi-bright-red: #ffa198;
  --bl-ansi-bright-green: #56d364;
  --bl-ansi-bright-yellow: #e3b341;
  --bl-ansi-bright-blue: #79c0ff;
  --bl-ansi-bright-magenta: #d2a8ff;
  --bl-ansi-bright-cyan: #56d4dd;
  --bl-ansi-bright-white: #f0f6fc;
`;

/** The space above the first row ("Load earlier"), in px. */
export const TOP_PX = 32;

/** A version in the `href` makes two package versions on one page keep their own sheet. */
export const STYLE_HREF = "buildlogs-react-viewer-2";

export const CSS = `
.bl-root {${LIGHT}
  --bl-font: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
  --bl-ui-font: system-ui, -apple-system, "Segoe UI", sans-serif;
  --bl-font-size: 12px;
  display: flex;
  flex-direction: column;
  position: relative;
  box-sizing: border-box;
  height: 100%;
  min-height: 0;
  background: var(--bl-bg);
  color: var(--bl-fg);
  border: 1px solid var(--bl-border);
  border-radius: 6px;
  overflow: hidden;
  font: 13px/1.4 var(--bl-ui-font);
}
.bl-root[data-theme="dark"] {${DARK}}
@media (prefers-color-scheme: dark) {
  .bl-root[data-theme="auto"] {${DARK}}
}
.bl-root *, .bl-root *::before, .bl-root *::after { box-sizing: border-box; }
.bl-root .bl-toolbar {
  display: flex; flex-wrap: wrap; align-items: center; gap: 8px;
  padding: 6px 10px; background: var(--bl-toolbar-bg); border-bottom: 1px solid var(--bl-border);
}
.bl-root .bl-title { font-weight: 600; margin: 0; font-size: 13px; }
.bl-root .bl-spacer { flex: 1; }
.bl-root .bl-badge {
  display: inline-flex; align-items: center; gap: 4px; padding: 1px 8px; border-radius: 999px;
  font-size: 12px; font-weight: 600; border: 1px solid currentColor;
}
.bl-root .bl-badge[data-state="running"] { color: var(--bl-running); }
.bl-root .bl-badge[data-state="ready"] { color: var(--bl-ready); }
.bl-root .bl-badge[data-state="failed"] { color: var(--bl-failed); }
.bl-root .bl-badge[data-state="connecting"] { color: var(--bl-muted); }
.bl-root .bl-conn { color: var(--bl-muted); font-size: 12px; }
.bl-root .bl-button {
  font: inherit; font-size: 12px; color: var(--bl-fg); background: var(--bl-bg);
  border: 1px solid var(--bl-border); border-radius: 6px; padding: 2px 10px; cursor: pointer;
}
.bl-root .bl-button:hover:not(:disabled) { border-color: var(--bl-muted); }
.bl-root .bl-button:disabled { color: var(--bl-muted); cursor: default; }
.bl-root .bl-button[aria-pressed="true"] { background: var(--bl-accent); color: var(--bl-accent-fg); border-color: var(--bl-accent); }
.bl-root .bl-button:focus-visible, .bl-root .bl-scroller:focus-visible, .bl-root .bl-gutter:focus-visible {
  outline: 2px solid var(--bl-accent); outline-offset: -2px;
}
.bl-root .bl-notice, .bl-root .bl-error {
  display: flex; align-items: center; gap: 8px; padding: 6px 10px; border-bottom: 1px solid var(--bl-border);
}
.bl-root .bl-notice { background: var(--bl-notice-bg); }
.bl-root .bl-error { background: var(--bl-error-bg); }
.bl-root .bl-sr {
  position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; border: 0;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap;
}
.bl-root .bl-scroller {
  position: relative; flex: 1; min-height: 0; overflow: auto; overflow-anchor: none;
  font-family: var(--bl-font); font-size: var(--bl-font-size);
}
.bl-root .bl-phase {
  position: sticky; top: 0; left: 0; height: 0; z-index: 2; display: flex; justify-content: flex-end;
  overflow: visible; pointer-events: none;
}
.bl-root .bl-phase > span {
  display: inline-block; height: 18px; line-height: 16px; white-space: nowrap;
  margin: 6px 14px 0 0; padding: 0 8px; border-radius: 999px; background: var(--bl-toolbar-bg);
  border: 1px solid var(--bl-border); color: var(--bl-muted); font-family: var(--bl-ui-font); font-size: 11px;
}
.bl-root .bl-canvas { position: relative; min-width: 100%; }
.bl-root .bl-top { position: absolute; top: 0; left: 0; right: 0; display: flex; align-items: center; gap: 8px; padding: 0 10px; color: var(--bl-muted); font-family: var(--bl-ui-font); }
.bl-root .bl-bottom { position: absolute; bottom: 0; left: 0; right: 0; display: flex; align-items: center; gap: 8px; padding: 0 10px; color: var(--bl-muted); font-family: var(--bl-ui-font); }
.bl-root .bl-rows { position: absolute; top: ${TOP_PX}px; left: 0; right: 0; bottom: 0; }
.bl-root .bl-row {
  position: absolute; top: 0; left: 0; min-width: 100%; display: flex; white-space: pre;
}
.bl-root .bl-wrap .bl-row { width: 100%; white-space: pre-wrap; overflow-wrap: anywhere; }
.bl-root .bl-row:hover { background: var(--bl-row-hover); }
.bl-root .bl-row[data-highlight="true"] { background: var(--bl-highlight); }
.bl-root .bl-row[data-gap="true"] { box-shadow: inset 0 2px 0 var(--bl-failed); }
.bl-root .bl-row[data-would-be="true"] { box-shadow: inset 0 2px 0 var(--bl-accent); }
.bl-root .bl-row[data-match="current"] { background: var(--bl-highlight); box-shadow: inset 3px 0 0 var(--bl-mark-current); }
.bl-root .bl-mark { background: var(--bl-mark); color: inherit; border-radius: 2px; padding: 0; }
.bl-root .bl-row[data-match="current"] .bl-mark { background: var(--bl-mark-current); }
.bl-root .bl-gutter {
  flex: none; width: calc(8ch + 20px); padding: 0 10px; text-align: right; color: var(--bl-muted);
  text-decoration: none; user-select: none;
}
.bl-root .bl-gutter:hover { text-decoration: underline; cursor: pointer; }
.bl-root .bl-text { flex: 1; padding-right: 10px; tab-size: 8; }
.bl-root .bl-stderr { color: var(--bl-stderr); }
.bl-root .bl-system { color: var(--bl-system); }
.bl-root .bl-text a { color: var(--bl-link); text-decoration: underline; }
.bl-root .bl-b { font-weight: 700; }
.bl-root .bl-d { opacity: 0.7; }
.bl-root .bl-i { font-style: italic; }
.bl-root .bl-u { text-decoration: underline; }
.bl-root .bl-s { text-decoration: line-through; }
.bl-root .bl-u.bl-s { text-decoration: underline line-through; }
.bl-root .bl-jump {
  position: absolute; right: 16px; bottom: 16px; z-index: 3;
  background: var(--bl-accent); color: var(--bl-accent-fg); border-color: var(--bl-accent);
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.25); padding: 4px 12px;
}
.bl-root .bl-jump:hover:not(:disabled) { border-color: var(--bl-accent); filter: brightness(1.1); }
.bl-root .bl-search { display: inline-flex; align-items: center; gap: 4px; }
.bl-root .bl-search-input {
  font: inherit; font-size: 12px; width: 16em; padding: 2px 8px; color: var(--bl-fg); background: var(--bl-bg);
  border: 1px solid var(--bl-border); border-radius: 6px;
}
.bl-root .bl-search-input[aria-invalid="true"] { border-color: var(--bl-failed); }
.bl-root .bl-search-input:focus-visible { outline: 2px solid var(--bl-accent); outline-offset: -1px; }
.bl-root .bl-toggle { padding: 2px 6px; min-width: 26px; font-family: var(--bl-font); }
.bl-root .bl-search-count { min-width: 6em; color: var(--bl-muted); font-size: 12px; white-space: nowrap; }
.bl-root .bl-search-error {
  padding: 4px 10px; background: var(--bl-error-bg); border-bottom: 1px solid var(--bl-border);
  font-size: 12px; font-family: var(--bl-font); white-space: pre-wrap;
}
.bl-root .bl-empty { padding: 10px; color: var(--bl-muted); font-family: var(--bl-ui-font); }
`;
