import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";

export type Async<T> =
  | { state: "loading"; data?: T | undefined }
  | { state: "error"; error: string; data?: T | undefined }
  | { state: "ready"; data: T };

/** Words for any failure, so a page never shows a bare stack or "[object Object]". */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof TypeError) return `The platform could not be reached (${error.message}).`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Loads data for a view and reloads it when `deps` change, or every `refreshMs`. The previous data stays on
 * screen while a refresh is in flight, so auto-refreshing charts do not flicker.
 */
export function useAsync<T>(
  load: () => Promise<T>,
  deps: unknown[],
  refreshMs?: number,
): [Async<T>, () => void] {
  const [result, setResult] = useState<Async<T>>({ state: "loading" });
  const generation = useRef(0);
  const run = useCallback(() => {
    const mine = ++generation.current;
    setResult((previous) => ({ state: "loading", data: previous.data }));
    load().then(
      (data) => {
        if (mine === generation.current) setResult({ state: "ready", data });
      },
      (error: unknown) => {
        if (mine === generation.current)
          setResult((previous) => ({ state: "error", error: describeError(error), data: previous.data }));
      },
    );
  }, deps);
  useEffect(() => {
    run();
    if (!refreshMs) return;
    const timer = setInterval(run, refreshMs);
    return () => clearInterval(timer);
  }, [run, refreshMs]);
  return [result, run];
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="status" role="status">
      Loading {what}…
    </p>
  );
}

export function ErrorNote({ message, retry }: { message: string; retry?: () => void }) {
  return (
    <div class="error" role="alert">
      <p>{message}</p>
      {retry && (
        <button type="button" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

/**
 * A wide table's frame: it scrolls sideways on narrow screens instead of widening the page, and takes focus so
 * keyboard users can scroll it too.
 */
export function Scroll({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable from the keyboard
    <section class="scroll" aria-label={label} tabIndex={0}>
      {children}
    </section>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/** Renders the three states of an Async value with one body for the data. */
export function Show<T>({
  value,
  what,
  retry,
  children,
}: {
  value: Async<T>;
  what: string;
  retry?: () => void;
  children: (data: T) => ComponentChildren;
}) {
  if (value.data !== undefined) {
    return (
      <>
        {value.state === "error" && <ErrorNote message={value.error} retry={retry} />}
        {children(value.data)}
      </>
    );
  }
  if (value.state === "error") return <ErrorNote message={value.error} retry={retry} />;
  return <Loading what={what} />;
}

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex="0"]';

/**
 * Keeps Tab inside an open modal: a native modal dialog makes the page inert but still lets focus leave for
 * the browser's own controls after its last element.
 */
function trapTab(event: KeyboardEvent): void {
  if (event.key !== "Tab") return;
  const dialog = event.currentTarget as HTMLDialogElement;
  const items = [...dialog.querySelectorAll<HTMLElement>(FOCUSABLE)];
  const first = items[0];
  const last = items[items.length - 1];
  if (!first || !last) return;
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

/** A modal dialog on the native <dialog> element: focus stays inside and Escape closes it. */
export function Dialog({
  title,
  open,
  onClose,
  children,
}: {
  title: string;
  open: boolean;
  onClose: () => void;
  children: ComponentChildren;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose} onKeyDown={trapTab}>
      <div class="dialog-head">
        <h2 id="dialog-title">{title}</h2>
        <button type="button" class="link" onClick={onClose} aria-label="Close">
          ✕
        </button>
      </div>
      {children}
    </dialog>
  );
}

export function formatNumber(n: number | null | undefined): string {
  return n === null || n === undefined ? "–" : new Intl.NumberFormat("en").format(n);
}

export function formatUsd(micro: number): string {
  return new Intl.NumberFormat("en", { style: "currency", currency: "USD", maximumFractionDigits: 4 }).format(
    micro / 1_000_000,
  );
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleString("en", { dateStyle: "medium", timeStyle: "short" });
}

export function Stars({ value }: { value: number }) {
  const rounded = Math.round(value * 2) / 2;
  return (
    <span class="stars" role="img" aria-label={`${rounded.toFixed(1)} out of 5 stars`}>
      {"★".repeat(Math.floor(rounded))}
      {rounded % 1 ? "½" : ""}
      <span class="dim">{"☆".repeat(5 - Math.ceil(rounded))}</span>
    </span>
  );
}
