/**
 * `<BuildLog jobId getToken baseUrl />`: a drop-in viewer for one job's log.
 *
 * Built on {@link useJobLogs} and on @tanstack/react-virtual: only the rows on screen are in the
 * DOM, "Load earlier" keeps the rows the reader looks at in place (`anchorTo: "end"`), and the
 * view sticks to the bottom while the reader is there (`followOnAppend`). Scrolling up pauses
 * that; "Jump to latest (N new)" brings them back. Lines are parsed for ANSI colours by
 * {@link parseAnsi} and rendered as text in spans, never as HTML.
 *
 * Seams for what comes next: the toolbar takes more controls (`toolbar`), each row's gutter is
 * already a `#L<line id>` link, and `highlightId` marks a row (permalinks and search results).
 */
import { useVirtualizer } from "@tanstack/react-virtual";
import type { LogLine } from "@buildlogs/client";
import {
  type CSSProperties,
  type KeyboardEvent,
  memo,
  type ReactNode,
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "react";

import { parseAnsi, type Segment } from "./ansi.js";
import { CSS, STYLE_HREF, TOP_PX } from "./styles.js";
import { type UseJobLogsOptions, type UseJobLogsResult, useJobLogs } from "./useJobLogs.js";

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
  /** A line's id to highlight (e.g. the one a link points to). */
  highlightId?: string | null;
  /** The gutter shows each line's time (default true). */
  timestamps?: boolean;
  className?: string;
  style?: CSSProperties;
}

/** The space above the first row: "Load earlier", or where the log begins. */
const TOP = TOP_PX;
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

/** A line's text: plain text as one text node, coloured text as spans, http(s) links as links. */
const LineText = memo(function LineText({ text }: { text: string }) {
  const segments = useMemo(() => parseAnsi(text), [text]);
  if (segments.length === 1 && !segments[0]!.fg && !segments[0]!.bg && !segments[0]!.href && !segmentClass(segments[0]!)) {
    return <>{segments[0]!.text}</>;
  }
  return (
    <>
      {segments.map((s, i) => {
        const className = segmentClass(s);
        const style = segmentStyle(s);
        if (s.href) {
          return (
            <a key={i} href={s.href} className={className} style={style} target="_blank" rel="noopener noreferrer nofollow">
              {s.text}
            </a>
          );
        }
        return className || style ? (
          <span key={i} className={className} style={style}>
            {s.text}
          </span>
        ) : (
          s.text
        );
      })}
    </>
  );
});

const Row = memo(function Row({
  line,
  timestamps,
  highlighted,
}: {
  line: LogLine;
  timestamps: boolean;
  highlighted: boolean;
}) {
  const at = time(line.ts);
  return (
    <>
      <a className="bl-gutter" href={`#L${line.id}`} tabIndex={-1} aria-label={`Line at ${at || line.id}`} title={line.ts}>
        {timestamps ? at : ""}
      </a>
      <span className={`bl-text${line.source === "stderr" ? " bl-stderr" : line.source === "system" ? " bl-system" : ""}`} data-highlight={highlighted || undefined}>
        <LineText text={line.text} />
      </span>
    </>
  );
});

export function BuildLog(props: BuildLogProps) {
  const {
    jobId,
    theme = "auto",
    defaultWrap = false,
    rowHeight = 20,
    title,
    toolbar,
    highlightId = null,
    timestamps = true,
    className,
    style,
    ...options
  } = props;
  const logs = useJobLogs(jobId, options);
  const { lines } = logs;
  const [wrap, setWrap] = useState(defaultWrap);
  const [following, setFollowing] = useState(true);
  const receivedAtPause = useRef(0);
  const received = useRef(logs.received);
  useLayoutEffect(() => {
    received.current = logs.received;
  });
  const [dismissedReset, setDismissedReset] = useState<object | null>(null);
  const scroller = useRef<HTMLDivElement>(null);

  const virtualizer = useVirtualizer({
    count: lines.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => rowHeight,
    getItemKey: (index) => lines.first + index,
    overscan: 20,
    paddingStart: TOP,
    anchorTo: "end",
    followOnAppend: following,
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
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const onScroll = () => {
      const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight <= END_SLACK;
      if (atEnd) setFollowing(true);
      else pause();
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => el.removeEventListener("scroll", onScroll);
  }, [pause]);

  // A new job starts at the bottom.
  useEffect(() => {
    setFollowing(true);
  }, [jobId]);

  const jumpToLatest = useCallback(async () => {
    if (!logs.atLiveEdge) await logs.jumpToLatest();
    setFollowing(true);
    virtualizer.scrollToEnd();
  }, [logs, virtualizer]);

  // While following, stay at the end even when the list first fills or wrapping changes heights.
  useEffect(() => {
    if (following && lines.length > 0 && !virtualizer.isAtEnd(END_SLACK)) virtualizer.scrollToEnd();
  }, [following, lines, wrap, virtualizer]);

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (event.target !== event.currentTarget) return;
    if (event.key === "ArrowUp" || event.key === "PageUp" || event.key === "Home") pause();
    if (event.key === "End") {
      event.preventDefault();
      void jumpToLatest();
    }
  };

  const badge = badgeOf(logs);
  const announcement = announcementOf(logs, badge);
  const items = virtualizer.getVirtualItems();
  const topItem = virtualizer.getVirtualItemForOffset(Math.max(TOP, virtualizer.scrollOffset ?? 0));
  const phase = topItem ? lines.at(topItem.index)?.phase : lines.at(lines.length - 1)?.phase;
  const newLines = following ? 0 : Math.max(0, logs.received - receivedAtPause.current);
  const showReset = logs.reset !== null && dismissedReset !== logs.reset;

  return (
    <div
      className={`bl-root${className ? ` ${className}` : ""}`}
      data-theme={theme}
      data-following={following}
      style={{ ...style, ["--bl-row-height" as string]: `${rowHeight}px` }}
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
      </div>
      <div className="bl-sr" role="status" aria-live="polite">
        {announcement}
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
            ) : logs.status === "open" ? (
              <span>No lines yet</span>
            ) : null}
          </div>
          <div
            className="bl-rows"
            role="log"
            aria-live="off"
            aria-label={jobId ? `Log of job ${jobId}` : "Log"}
          >
            {items.map((item) => {
              const line = lines.at(item.index);
              if (!line) return null;
              return (
                <div
                  key={item.key}
                  className="bl-row"
                  data-index={item.index}
                  data-id={line.id}
                  data-highlight={line.id === highlightId || undefined}
                data-gap={line.id === logs.gapBeforeId || undefined}
                title={line.id === logs.gapBeforeId ? "Lines before this one were trimmed away while disconnected" : undefined}
                  ref={wrap ? virtualizer.measureElement : undefined}
                  style={{
                    transform: `translateY(${item.start - TOP}px)`,
                    lineHeight: `${rowHeight}px`,
                    ...(wrap ? {} : { height: rowHeight }),
                  }}
                >
                  <Row line={line} timestamps={timestamps} highlighted={line.id === highlightId} />
                </div>
              );
            })}
          </div>
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
