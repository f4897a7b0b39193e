import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
  /** Drawn as a filled band between this series and the one at `bandWith` (e.g. a forecast interval). */
  bandWith?: number;
  dash?: boolean;
}

/**
 * A time-series chart (uPlot, canvas). Canvas is invisible to assistive technology, so every chart carries a
 * text summary and the page shows the same numbers in a table.
 */
export function Chart({
  title,
  times,
  series,
  summary,
}: {
  title: string;
  times: number[];
  series: Series[];
  summary: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(280, el.clientWidth);
    const bands = series.flatMap((s, i) =>
      s.bandWith === undefined
        ? []
        : [{ series: [i + 1, s.bandWith + 1] as [number, number], fill: `${s.color}33` }],
    );
    const plot = new uPlot(
      {
        width,
        height: 220,
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            ...(s.dash ? { dash: [6, 4] } : {}),
          })),
        ],
        bands,
        axes: [{}, { size: 60 }],
        legend: { show: true },
      },
      [times, ...series.map((s) => s.values)],
      el,
    );
    const resize = new ResizeObserver(() =>
      plot.setSize({ width: Math.max(280, el.clientWidth), height: 220 }),
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [times, series]);
  return (
    <figure class="chart">
      <figcaption>
        <strong>{title}</strong> <span class="visually-hidden">{summary}</span>
      </figcaption>
      <div ref={box} aria-hidden="true" />
    </figure>
  );
}
