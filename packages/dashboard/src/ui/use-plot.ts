import type { RefObject } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

/**
 * A uPlot chart in `box`, made again when `deps` change and as wide as its box (never under
 * `minWidth`), destroyed with the component. Data changes go through the returned plot's `setData`.
 */
export function usePlot(
  box: RefObject<HTMLDivElement | null>,
  options: (width: number) => uPlot.Options,
  data: uPlot.AlignedData,
  minWidth: number,
  deps: readonly unknown[],
): RefObject<uPlot | null> {
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = box.current!;
    const u = new uPlot(options(Math.max(minWidth, el.clientWidth)), data, el);
    plot.current = u;
    const resize = new ResizeObserver(() => {
      const width = Math.max(minWidth, el.clientWidth);
      if (width !== u.width) u.setSize({ width, height: u.height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, deps);
  return plot;
}
