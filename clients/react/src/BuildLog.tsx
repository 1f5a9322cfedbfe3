/**
 * `<BuildLog jobId getToken baseUrl />`: a drop-in viewer for one job's log.
 *
 * Built on {@link useJobLogs} and on @tanstack/react-virtual: only the rows on screen are in the
 * DOM, "Load earlier" keeps the rows the reader looks at in place (`anchorTo: "end"`), and the
 * view sticks to the bottom while the reader is there (`followOnAppend`). Scrolling up pauses
 * that; "Jump to latest (N new)" brings them back. Lines are parsed for ANSI colours by
 * {@link parseAnsi} and rendered as text in spans, never as HTML.
 *
 * Permalinks: a row's gutter is its `#L<line id>` link; clicking it sets the page's hash and
 * copies the link, and a page opened with such a hash (or `initialLineId`) opens the job at
 * that line (`openAround`), scrolled to it and highlighted, with "Load earlier" above and
 * "Load later" below until the view reaches the live tail. The search box asks the server
 * ({@link useLogSearch}); each next or previous match is opened the same way when it is not
 * loaded. The download button fetches `/logs/raw` with the token and saves it as a file.
 */
import { useVirtualizer } from "@tanstack/react-virtual";
import { BuildlogsError, type LogLine, NetworkError } from "@buildlogs/client";
import {
  type CSSProperties,
  Fragment,
  type KeyboardEvent,
  type MouseEvent,
  memo,
  type ReactNode,
  useCallback,
  useEffect,
  useId,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "react";

import { parseAnsi, type Segment } from "./ansi.js";
import { CSS, STYLE_HREF, TOP_PX } from "./styles.js";
import { type UseJobLogsOptions, type UseJobLogsResult, useJobLogs } from "./useJobLogs.js";
import { useBuildlogsClient, useLogSearch } from "./useLogSearch.js";

export interface BuildLogProps extends UseJobLogsOptions {
  jobId: string | null | undefined;
  /** `light`, `dark`, or `auto` (the default: follows `prefers-color-scheme`). */
  theme?: "light" | "dark" | "auto";
  /** Wrap long lines at first (default false: one row per line, scrolled sideways). */
  defaultWrap?: boolean;
  /** Row height in px when not wrapping (default 20). */
  rowHeight?: number;
  /** The heading (default: `Job <jobId>`). */
  title?: ReactNode;
  /** More controls at the end of the toolbar. */
  toolbar?: ReactNode;
  /** A line's id to highlight (besides the permalink's and the current search match's). */
  highlightId?: string | null;
  /**
   * Open the job at this line (its id), scrolled to it and highlighted, instead of at the
   * latest lines. Takes precedence over the page's `#L<line id>` hash.
   */
  initialLineId?: string | null;
  /**
   * Use the page's hash for permalinks (default true): open at `#L<line id>`, follow its
   * changes (back and forward), and set it when a line's gutter is clicked.
   */
  permalinks?: boolean;
  /** Called when a line's gutter is clicked, with its id and its link (already copied when the clipboard allows). */
  onPermalink?: (lineId: string, url: string) => void;
  /** Show the search box (default true). */
  search?: boolean;
  /** Show the download button (default true). */
  download?: boolean;
  /** The gutter shows each line's time (default true). */
  timestamps?: boolean;
  className?: string;
  style?: CSSProperties;
}

/** The space above the first row: "Load earlier", or where the log begins. */
const TOP = TOP_PX;
/** The space below the last row while newer lines are not loaded ("Load later"). */
const BOTTOM = TOP_PX;
/** A permalink's hash: `#L<ms>-<seq>`. */
const PERMALINK = /^#L(\d{1,20}-\d{1,20})$/;

/** The line id in the page's hash, if it is a permalink (never at import: SSR-safe). */
function hashLineId(): string | null {
  if (typeof location === "undefined") return null;
  return PERMALINK.exec(location.hash)?.[1] ?? null;
}

/** The pattern that marks matches in the rows shown: the server's semantics, as far as JS follows them. */
function markPattern(query: string, regex: boolean, caseSensitive: boolean): RegExp | null {
  if (!query) return null;
  const source = regex ? query : query.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  try {
    return new RegExp(source, caseSensitive ? "gu" : "giu");
  } catch {
    // A Rust-only construct (e.g. `(?i)`): the rows are still found, just not marked.
    return null;
  }
}
/** Within this many px of the end counts as "at the bottom". */
const END_SLACK = 4;

type Badge = "connecting" | "running" | "ready" | "failed";

function badgeOf(logs: UseJobLogsResult): Badge {
  if (logs.final) return logs.final;
  if (logs.jobStatus === "ready" || logs.jobStatus === "failed") return logs.jobStatus;
  return logs.jobStatus ? "running" : "connecting";
}

function announcementOf(logs: UseJobLogsResult, badge: Badge): string {
  if (logs.error) return `Error: ${logs.error.message}`;
  if (badge === "ready" || badge === "failed") return `Job ${badge}`;
  if (logs.status === "reconnecting") return "Connection lost, reconnecting";
  if (logs.reset) return "Some lines were trimmed while the connection was down";
  if (logs.status === "open") return `Job ${logs.jobStatus ?? "running"}`;
  return "";
}

function time(ts: string): string {
  const match = /T(\d\d:\d\d:\d\d)/.exec(ts);
  return match ? match[1]! : "";
}

function segmentClass(s: Segment): string | undefined {
  const names = [s.bold && "bl-b", s.dim && "bl-d", s.italic && "bl-i", s.underline && "bl-u", s.strike && "bl-s"];
  const joined = names.filter(Boolean).join(" ");
  return joined || undefined;
}

function segmentStyle(s: Segment): CSSProperties | undefined {
  if (!s.fg && !s.bg) return undefined;
  return { ...(s.fg ? { color: s.fg } : {}), ...(s.bg ? { backgroundColor: s.bg } : {}) };
}

/** The `[start, end)` ranges of `pattern`'s non-empty matches in `text`. */
function matchRanges(text: string, pattern: RegExp | null): [number, number][] {
  if (!pattern) return [];
  const ranges: [number, number][] = [];
  for (const match of text.matchAll(pattern)) {
    if (match[0].length > 0) ranges.push([match.index, match.index + match[0].length]);
    if (ranges.length >= 100) break;
  }
  return ranges;
}

/** A segment's text with the parts inside `ranges` (offsets from `from`) as `<mark>`s. */
function marked(text: string, from: number, ranges: [number, number][]): ReactNode {
  const to = from + text.length;
  const pieces: ReactNode[] = [];
  let at = from;
  for (const [start, end] of ranges) {
    if (end <= at || start >= to) continue;
    const a = Math.max(start, at);
    const b = Math.min(end, to);
    if (a > at) pieces.push(text.slice(at - from, a - from));
    pieces.push(
      <mark key={a} className="bl-mark">
        {text.slice(a - from, b - from)}
      </mark>,
    );
    at = b;
  }
  if (pieces.length === 0) return text;
  if (at < to) pieces.push(text.slice(at - from));
  return pieces;
}

/**
 * A line's text: plain text as one text node, coloured text as spans, http(s) links as links,
 * and what `pattern` matches (search) as `<mark>`s. Never HTML from the text.
 */
const LineText = memo(function LineText({ text, pattern }: { text: string; pattern: RegExp | null }) {
  const segments = useMemo(() => parseAnsi(text), [text]);
  const ranges = useMemo(() => matchRanges(segments.map((s) => s.text).join(""), pattern), [segments, pattern]);
  if (
    ranges.length === 0 &&
    segments.length === 1 &&
    !segments[0]!.fg &&
    !segments[0]!.bg &&
    !segments[0]!.href &&
    !segmentClass(segments[0]!)
  ) {
    return <>{segments[0]!.text}</>;
  }
  let offset = 0;
  return (
    <>
      {segments.map((s, i) => {
        const className = segmentClass(s);
        const style = segmentStyle(s);
        const content = marked(s.text, offset, ranges);
        offset += s.text.length;
        if (s.href) {
          return (
            <a key={i} href={s.href} className={className} style={style} target="_blank" rel="noopener noreferrer nofollow">
              {content}
            </a>
          );
        }
        return className || style ? (
          <span key={i} className={className} style={style}>
            {content}
          </span>
        ) : (
          <Fragment key={i}>{content}</Fragment>
        );
      })}
    </>
  );
});

const Row = memo(function Row({
  line,
  timestamps,
  pattern,
}: {
  line: LogLine;
  timestamps: boolean;
  pattern: RegExp | null;
}) {
  const at = time(line.ts);
  return (
    <>
      <a className="bl-gutter" href={`#L${line.id}`} tabIndex={-1} aria-label={`Link to line at ${at || line.id}`} title={line.ts}>
        {timestamps ? at : ""}
      </a>
      <span className={`bl-text${line.source === "stderr" ? " bl-stderr" : line.source === "system" ? " bl-system" : ""}`}>
        <LineText text={line.text} pattern={pattern} />
      </span>
    </>
  );
});

/** "3 of 12+": the current match, and how many were found so far ("+" while pages remain). */
function searchCount(search: ReturnType<typeof useLogSearch>): string {
  if (!search.query || search.error) return "";
  const total = `${search.matches.length}${search.complete ? "" : "+"}`;
  if (search.matches.length === 0) return search.complete ? "No matches" : "Searching…";
  return search.current < 0 ? `${total} matches` : `${search.current + 1} of ${total}`;
}

export function BuildLog(props: BuildLogProps) {
  const {
    jobId,
    theme = "auto",
    defaultWrap = false,
    rowHeight = 20,
    title,
    toolbar,
    highlightId = null,
    initialLineId,
    permalinks = true,
    onPermalink,
    search: searchBox = true,
    download: downloadButton = true,
    timestamps = true,
    className,
    style,
    ...options
  } = props;
  // The line the job opens at: the prop, else the page's permalink; for the first job only.
  const [opening] = useState(() => ({ jobId, lineId: initialLineId ?? (permalinks ? hashLineId() : null) }));
  const openAt = opening.jobId === jobId ? opening.lineId : null;
  const logs = useJobLogs(jobId, { ...options, initialLineId: openAt });
  const { lines } = logs;
  const latest = useRef(logs);
  useLayoutEffect(() => {
    latest.current = logs;
  });
  const [wrap, setWrap] = useState(defaultWrap);
  const [following, setFollowing] = useState(openAt === null);
  const receivedAtPause = useRef(0);
  const received = useRef(logs.received);
  useLayoutEffect(() => {
    received.current = logs.received;
  });
  const [dismissedReset, setDismissedReset] = useState<object | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const root = useRef<HTMLDivElement>(null);
  const searchInput = useRef<HTMLInputElement>(null);
  const ids = useId();

  /** The permalink's line (highlighted), and the line to bring into view once it is loaded. */
  const [permalinkId, setPermalinkId] = useState<string | null>(openAt);
  const [dismissedAround, setDismissedAround] = useState<object | null>(null);
  const pendingScroll = useRef<string | null>(openAt);
  const [scrollRequest, setScrollRequest] = useState(0);
  const [message, setMessage] = useState("");

  const client = useBuildlogsClient(options);
  const [query, setQuery] = useState("");
  const [regex, setRegex] = useState(false);
  const [caseSensitive, setCaseSensitive] = useState(false);
  const search = useLogSearch(searchBox ? jobId : null, query, { client, regex, caseSensitive });
  const pattern = useMemo(() => markPattern(search.query, regex, caseSensitive), [search.query, regex, caseSensitive]);

  const [downloading, setDownloading] = useState(false);
  const [downloadError, setDownloadError] = useState<BuildlogsError | null>(null);

  const virtualizer = useVirtualizer({
    count: lines.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => rowHeight,
    getItemKey: (index) => lines.first + index,
    overscan: 20,
    paddingStart: TOP,
    paddingEnd: logs.hasLater ? BOTTOM : 0,
    anchorTo: "end",
    followOnAppend: following && logs.atLiveEdge,
    scrollEndThreshold: END_SLACK,
  });

  const pause = useCallback(() => {
    setFollowing((was) => {
      if (was) receivedAtPause.current = received.current;
      return false;
    });
  }, []);

  // Follow while at the bottom, pause as soon as the reader leaves it (their scroll, not ours:
  // rows added below do not fire `scroll`, and our own scrolls to the end land at the bottom).
  // Away from the live tail (a permalink), nearing the bottom loads the next page instead.
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const onScroll = () => {
      const left = el.scrollHeight - el.scrollTop - el.clientHeight;
      if (left <= END_SLACK) setFollowing(true);
      else pause();
      const now = latest.current;
      if (now.hasLater && !now.loadingLater && !now.laterError && left < el.clientHeight) {
        void now.loadLater().catch(() => undefined);
      }
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => el.removeEventListener("scroll", onScroll);
  }, [pause]);

  // A new job starts at the bottom (the first one may start at a permalink).
  const shownJob = useRef(jobId);
  useEffect(() => {
    if (shownJob.current === jobId) return;
    shownJob.current = jobId;
    pendingScroll.current = null;
    setPermalinkId(null);
    setFollowing(true);
  }, [jobId]);

  /** Brings line `id` into view and marks it: at once when it is loaded, else after `openAround`. */
  const goTo = useCallback((id: string) => {
    pendingScroll.current = id;
    setFollowing(false);
    setScrollRequest((n) => n + 1);
    if (!latest.current.lines.find(id).exact) void latest.current.openAround(id).catch(() => undefined);
  }, []);

  // Scroll to the pending line once it is loaded (or, missing, once its page says where it would be).
  useEffect(() => {
    const id = pendingScroll.current;
    if (id === null) return;
    const around = logs.around;
    const { index, exact } = lines.find(id);
    const settled = around?.id === id && !around.loading;
    if (!exact && !settled) return;
    if (around?.id === id && around.loading) return;
    pendingScroll.current = null;
    if (lines.length > 0) virtualizer.scrollToIndex(Math.min(index, lines.length - 1), { align: "center" });
  }, [lines, logs.around, scrollRequest, virtualizer]);

  // Back and forward through permalinks (or a link to another line of this log).
  useEffect(() => {
    if (!permalinks) return;
    const onHashChange = () => {
      const id = hashLineId();
      if (id === null) return;
      setPermalinkId(id);
      goTo(id);
    };
    window.addEventListener("hashchange", onHashChange);
    return () => window.removeEventListener("hashchange", onHashChange);
  }, [permalinks, goTo]);

  const onGutterClick = (event: MouseEvent<HTMLDivElement>) => {
    const gutter = (event.target as HTMLElement).closest?.(".bl-gutter");
    const id = gutter?.closest<HTMLElement>(".bl-row")?.dataset.id;
    if (!id) return;
    event.preventDefault();
    setPermalinkId(id);
    pause();
    let url = `#L${id}`;
    if (permalinks && typeof location !== "undefined") {
      // Set without a `hashchange` of our own to answer (the line is where the reader clicked it).
      history.pushState(history.state, "", `#L${id}`);
      url = location.href;
    }
    const copy = typeof navigator !== "undefined" ? navigator.clipboard?.writeText?.(url) : undefined;
    if (copy) {
      copy.then(
        () => setMessage("Link to the line copied"),
        () => setMessage("Link to the line set in the address bar"),
      );
    } else {
      setMessage("Link to the line set in the address bar");
    }
    onPermalink?.(id, url);
  };

  const jumpToLatest = useCallback(async () => {
    pendingScroll.current = null;
    if (!logs.atLiveEdge) await logs.jumpToLatest();
    setFollowing(true);
    virtualizer.scrollToEnd();
  }, [logs, virtualizer]);

  // While following, stay at the end even when the list first fills or wrapping changes heights.
  useEffect(() => {
    if (!following || !logs.atLiveEdge || pendingScroll.current !== null) return;
    if (lines.length > 0 && !virtualizer.isAtEnd(END_SLACK)) virtualizer.scrollToEnd();
  }, [following, lines, wrap, virtualizer, logs.atLiveEdge]);

  const move = async (direction: "next" | "previous") => {
    const match = await (direction === "next" ? search.next() : search.previous()).catch(() => null);
    if (match) goTo(match.id);
  };

  const download = async () => {
    if (!jobId || downloading) return;
    setDownloading(true);
    setDownloadError(null);
    try {
      const file = await client.downloadLog(jobId);
      const blob = await file.blob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = file.filename;
      link.hidden = true;
      (root.current ?? document.body).appendChild(link);
      link.click();
      link.remove();
      // The download has taken its copy once the click is handled; give it a moment all the same.
      setTimeout(() => URL.revokeObjectURL(url), 1_000);
      setMessage(`Downloaded ${file.filename}`);
    } catch (error) {
      setDownloadError(error instanceof BuildlogsError ? error : new NetworkError("download failed", { cause: error }));
    } finally {
      setDownloading(false);
    }
  };

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (event.target !== event.currentTarget) return;
    if (event.key === "ArrowUp" || event.key === "PageUp" || event.key === "Home") pause();
    if (event.key === "End") {
      event.preventDefault();
      void jumpToLatest();
    }
  };

  const onRootKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (searchBox && (event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "f") {
      event.preventDefault();
      searchInput.current?.focus();
      searchInput.current?.select();
    }
  };

  const badge = badgeOf(logs);
  const announcement = announcementOf(logs, badge);
  const items = virtualizer.getVirtualItems();
  const topItem = virtualizer.getVirtualItemForOffset(Math.max(TOP, virtualizer.scrollOffset ?? 0));
  const phase = topItem ? lines.at(topItem.index)?.phase : lines.at(lines.length - 1)?.phase;
  const newLines = following ? 0 : Math.max(0, logs.received - receivedAtPause.current);
  const showReset = logs.reset !== null && dismissedReset !== logs.reset;
  const around = logs.around;
  const aroundNote =
    around && around.id === permalinkId && !around.loading && dismissedAround !== around && (around.error || !around.found)
      ? around
      : null;
  const wouldBeIndex = aroundNote && !aroundNote.error ? lines.find(aroundNote.id).index : -1;
  const currentMatchId = search.currentMatch?.id ?? null;
  const count = searchCount(search);
  const searchAnnouncement = search.error
    ? `Search: ${search.error.message}`
    : search.current >= 0
      ? `Match ${count}`
      : count;

  return (
    <div
      ref={root}
      className={`bl-root${className ? ` ${className}` : ""}`}
      data-theme={theme}
      data-following={following}
      style={{ ...style, ["--bl-row-height" as string]: `${rowHeight}px` }}
      onKeyDown={onRootKeyDown}
    >
      <style href={STYLE_HREF} precedence="medium">
        {CSS}
      </style>
      <div className="bl-toolbar" role="toolbar" aria-label="Build log controls">
        <h2 className="bl-title">{title ?? (jobId ? `Job ${jobId}` : "No job")}</h2>
        <span className="bl-badge" data-state={badge} title={logs.jobStatus ?? undefined}>
          {badge}
          {badge === "running" && logs.jobStatus ? ` · ${logs.jobStatus}` : ""}
        </span>
        {logs.status === "reconnecting" && <span className="bl-conn">reconnecting…</span>}
        <span className="bl-spacer" />
        {toolbar}
        <button type="button" className="bl-button" aria-pressed={wrap} onClick={() => setWrap((w) => !w)}>
          Wrap lines
        </button>
        {downloadButton && (
          <button
            type="button"
            className="bl-button bl-download"
            disabled={!jobId || downloading}
            aria-busy={downloading || undefined}
            onClick={() => void download()}
          >
            {downloading ? "Downloading…" : "Download"}
          </button>
        )}
        {searchBox && (
          <div className="bl-search" role="search">
            <input
              ref={searchInput}
              type="search"
              className="bl-search-input"
              placeholder="Search the log"
              aria-label="Search the log"
              aria-invalid={search.error ? true : undefined}
              aria-describedby={search.error ? `${ids}-search-error` : undefined}
              value={query}
              onChange={(event) => setQuery(event.target.value)}
              onKeyDown={(event) => {
                if (event.key === "Enter") {
                  event.preventDefault();
                  void move(event.shiftKey ? "previous" : "next");
                } else if (event.key === "Escape" && query) {
                  event.preventDefault();
                  setQuery("");
                }
              }}
            />
            <button
              type="button"
              className="bl-button bl-toggle"
              aria-pressed={regex}
              aria-label="Regular expression"
              title="Regular expression"
              onClick={() => setRegex((on) => !on)}
            >
              .*
            </button>
            <button
              type="button"
              className="bl-button bl-toggle"
              aria-pressed={caseSensitive}
              aria-label="Match case"
              title="Match case"
              onClick={() => setCaseSensitive((on) => !on)}
            >
              Aa
            </button>
            <span className="bl-search-count">{count}</span>
            <button
              type="button"
              className="bl-button bl-toggle"
              aria-label="Previous match"
              title="Previous match (Shift+Enter)"
              disabled={!search.query || search.matches.length === 0}
              onClick={() => void move("previous")}
            >
              ↑
            </button>
            <button
              type="button"
              className="bl-button bl-toggle"
              aria-label="Next match"
              title="Next match (Enter)"
              disabled={!search.query || (search.matches.length === 0 && search.complete)}
              onClick={() => void move("next")}
            >
              ↓
            </button>
          </div>
        )}
      </div>
      {search.error && (
        <div className="bl-search-error" id={`${ids}-search-error`}>
          {search.error.message}
        </div>
      )}
      <div className="bl-sr" role="status" aria-live="polite">
        {announcement}
      </div>
      <div className="bl-sr" aria-live="polite">
        {searchAnnouncement || message}
      </div>
      {logs.error && (
        <div className="bl-error">
          <span>
            {logs.error.name}: {logs.error.message}
          </span>
          <button type="button" className="bl-button" onClick={logs.retry}>
            Retry
          </button>
        </div>
      )}
      {downloadError && (
        <div className="bl-error bl-download-error">
          <span>Download failed: {downloadError.message}</span>
          <button type="button" className="bl-button" onClick={() => setDownloadError(null)}>
            Dismiss
          </button>
        </div>
      )}
      {showReset && (
        <div className="bl-notice">
          <span>
            Some lines were trimmed away while the connection was down: the log has a gap before the lines that
            followed.
          </span>
          <button type="button" className="bl-button" onClick={() => setDismissedReset(logs.reset)}>
            Dismiss
          </button>
        </div>
      )}
      {aroundNote && (
        <div className="bl-notice bl-around">
          <span>
            {aroundNote.error
              ? `Could not open line ${aroundNote.id}: ${aroundNote.error.message}. Showing the latest lines.`
              : `Line ${aroundNote.id} is not in this log (trimmed away, or never written): showing where it would be.`}
          </span>
          <button type="button" className="bl-button" onClick={() => setDismissedAround(aroundNote)}>
            Dismiss
          </button>
        </div>
      )}
      <div
        ref={scroller}
        className={`bl-scroller${wrap ? " bl-wrap" : ""}`}
        tabIndex={0}
        aria-label="Log lines (arrow keys scroll, End jumps to the latest)"
        onWheel={(event) => {
          if (event.deltaY < 0) pause();
        }}
        onKeyDown={onKeyDown}
      >
        <div className="bl-phase" aria-hidden="true">
          {phase ? <span>{phase}</span> : null}
        </div>
        <div className="bl-canvas" style={{ height: virtualizer.getTotalSize() }}>
          <div className="bl-top" style={{ height: TOP }}>
            {logs.earlierError ? (
              <>
                <span>Could not load earlier lines.</span>
                <button type="button" className="bl-button" onClick={() => void logs.loadEarlier().catch(() => undefined)}>
                  Try again
                </button>
              </>
            ) : logs.hasEarlier ? (
              <button
                type="button"
                className="bl-button bl-earlier"
                disabled={logs.loadingEarlier}
                onClick={() => void logs.loadEarlier().catch(() => undefined)}
              >
                {logs.loadingEarlier ? "Loading…" : "Load earlier"}
              </button>
            ) : lines.length > 0 ? (
              <span>Beginning of the log</span>
            ) : logs.final ? (
              <span>No lines</span>
            ) : logs.status === "open" && !logs.around?.loading ? (
              <span>No lines yet</span>
            ) : null}
          </div>
          <div
            className="bl-rows"
            role="log"
            aria-live="off"
            aria-label={jobId ? `Log of job ${jobId}` : "Log"}
            onClick={onGutterClick}
          >
            {items.map((item) => {
              const line = lines.at(item.index);
              if (!line) return null;
              const gap = line.id === logs.gapBeforeId;
              return (
                <div
                  key={item.key}
                  className="bl-row"
                  data-index={item.index}
                  data-id={line.id}
                  data-highlight={line.id === highlightId || line.id === permalinkId || undefined}
                  data-match={line.id === currentMatchId ? "current" : undefined}
                  data-gap={gap || undefined}
                  data-would-be={item.index === wouldBeIndex || undefined}
                  title={gap ? "Lines before this one were trimmed away while disconnected" : undefined}
                  ref={wrap ? virtualizer.measureElement : undefined}
                  style={{
                    transform: `translateY(${item.start - TOP}px)`,
                    lineHeight: `${rowHeight}px`,
                    ...(wrap ? {} : { height: rowHeight }),
                  }}
                >
                  <Row line={line} timestamps={timestamps} pattern={pattern} />
                </div>
              );
            })}
          </div>
          {logs.hasLater && (
            <div className="bl-bottom" style={{ height: BOTTOM }}>
              {logs.laterError ? (
                <>
                  <span>Could not load later lines.</span>
                  <button type="button" className="bl-button" onClick={() => void logs.loadLater().catch(() => undefined)}>
                    Try again
                  </button>
                </>
              ) : (
                <button
                  type="button"
                  className="bl-button bl-later"
                  disabled={logs.loadingLater}
                  onClick={() => void logs.loadLater().catch(() => undefined)}
                >
                  {logs.loadingLater ? "Loading…" : "Load later"}
                </button>
              )}
            </div>
          )}
        </div>
      </div>
      {(!following || !logs.atLiveEdge) && lines.length > 0 && (
        <button type="button" className="bl-button bl-jump" onClick={() => void jumpToLatest()}>
          Jump to latest{newLines > 0 ? ` (${newLines} new)` : ""}
        </button>
      )}
    </div>
  );
}
