/* rainlog console charts, drawn with the vendored uPlot (static/vendor/uplot).
 *
 * Colours are read from the admin's CSS variables, so the charts follow the light or dark theme.
 * Series are told apart by their line style (solid / dashed) and their legend label as well,
 * never by colour alone. Times are shown in UTC, like every time in the admin.
 */
(function () {
  "use strict";

  function cssVar(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function theme() {
    return {
      fg: cssVar("--body-fg", "#333"),
      quiet: cssVar("--body-quiet-color", "#666"),
      grid: cssVar("--hairline-color", "#e8e8e8"),
      // Link colours keep their contrast in both themes, unlike the header's --primary.
      line: cssVar("--link-fg", "#417893"),
      error: cssVar("--error-fg", "#ba2121"),
    };
  }

  // "#417690" or "#fff" -> "rgba(65,118,144,alpha)"; anything else is returned unchanged.
  function withAlpha(color, alpha) {
    let hex = color.replace("#", "");
    if (!/^[0-9a-f]{3}([0-9a-f]{3})?$/i.test(hex)) return color;
    if (hex.length === 3) hex = hex.split("").map((c) => c + c).join("");
    const n = parseInt(hex, 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }

  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  const clock = uPlot.fmtDate("{HH}:{mm}");
  const day = uPlot.fmtDate("{YYYY}-{MM}-{DD}");

  // The time axis and legend in 24-hour UTC, with the date under each midnight (and the first tick).
  function timeAxis(t) {
    return axis(t, {
      values: (u, splits) =>
        splits.map((ts, i) => {
          const date = utc(ts);
          const text = clock(date);
          return text === "00:00" || i === 0 ? text + "\n" + day(date) : text;
        }),
    });
  }
  const timeSeries = { label: "Time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" };

  function number(value, digits) {
    return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function kw(value) {
    if (value == null) return "-";
    const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
    return number(value, digits) + " kW";
  }

  function axis(t, extra) {
    return Object.assign(
      {
        stroke: t.fg,
        grid: { stroke: t.grid, width: 1 },
        ticks: { stroke: t.grid, width: 1 },
      },
      extra
    );
  }

  function message(el, text) {
    el.textContent = "";
    const p = document.createElement("p");
    p.className = "rl-empty";
    p.textContent = text;
    el.appendChild(p);
  }

  const legendDash = {
    markers: {
      dash: (u, i) => (u.series[i].dash && u.series[i].dash.length ? "dashed" : "solid"),
    },
  };

  // Draws a chart that follows its container's width; returns the uPlot instance.
  function draw(el, opts, data) {
    el.textContent = "";
    const height = opts.height || 220;
    const width = () => Math.max(320, el.clientWidth);
    const plot = new uPlot(Object.assign({ width: width(), height: height, legend: legendDash }, opts), data, el);
    let lastWidth = width();
    new ResizeObserver(() => {
      if (width() !== lastWidth) {
        lastWidth = width();
        plot.setSize({ width: lastWidth, height: height });
      }
    }).observe(el);
    return plot;
  }

  // The JSON body, or an Error carrying the server's own explanation when it gave one.
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      (response) => {
        if (response.ok) return response.json();
        return response
          .json()
          .catch(() => ({}))
          .then((body) => {
            throw new Error(body.error || "HTTP " + response.status);
          });
      }
    );
  }

  // A bold line at zero, so that import (above) and export (below) read at a glance.
  function zeroLine(color) {
    return (u) => {
      const y = Math.round(u.valToPos(0, "y", true));
      if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.setLineDash([]);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, y);
      ctx.lineTo(u.bbox.left + u.bbox.width, y);
      ctx.stroke();
      ctx.restore();
    };
  }

  // A value axis that always shows zero, with a little room above and below: a household that
  // exports all day reads as export (below the zero line), never as a scale that starts at "out".
  function withZero(u, min, max) {
    const low = Math.min(0, min == null ? 0 : min);
    const high = Math.max(0, max == null ? 0 : max);
    const pad = (high - low) * 0.05 || 1;
    return [low < 0 ? low - pad : 0, high > 0 ? high + pad : 0];
  }

  // The window buttons of a chart ([data-window] inside `picker`): calls load(name) on a click
  // and marks the chosen one as pressed.
  function windowButtons(picker, initial, load) {
    const buttons = picker.querySelectorAll("[data-window]");
    const choose = (name) => {
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.window === name)));
      load(name);
    };
    buttons.forEach((b) => b.addEventListener("click", () => choose(b.dataset.window)));
    choose(initial);
  }

  // --- Dashboard ------------------------------------------------------------------------------

  function fleetCharts(root) {
    const demandEl = document.getElementById("fleet-demand-chart");
    const readingsEl = document.getElementById("fleet-readings-chart");
    const title = root.querySelector("[data-window-title]");
    let plots = [];

    function load(windowName) {
      plots.forEach((plot) => plot.destroy());
      plots = [];
      getJSON(root.dataset.fleetUrl + "?window=" + encodeURIComponent(windowName))
        .then((data) => {
          const t = theme();
          const x = { time: true, range: [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000] };
          const chosen = root.querySelector(`[data-window="${data.window}"]`);
          if (title && chosen) title.textContent = chosen.dataset.title;
          const demand = data.demand;
          const note = root.querySelector("[data-demand-note]");
          note.textContent = `(estimated from ${demand.households_sampled} sampled of ${demand.households_logging} logging households, ${demand.bucket_seconds / 60}-minute averages; no line where none had a reading)`;
          if (demand.fleet_kw.every((v) => v === null)) {
            message(demandEl, "No readings from the sampled households in this window.");
          } else {
            plots.push(
              draw(
                demandEl,
                {
                  height: 200,
                  tzDate: utc,
                  scales: { x: x, y: { range: withZero } },
                  series: [
                    timeSeries,
                    {
                      label: "Fleet demand",
                      stroke: t.line,
                      width: 2,
                      fill: withAlpha(t.line, 0.15),
                      value: (u, v) => kw(v),
                    },
                  ],
                  axes: [timeAxis(t), axis(t, { size: 80, values: (u, values) => values.map(kw) })],
                  hooks: { draw: [zeroLine(t.fg)] },
                },
                [demand.t, demand.fleet_kw]
              )
            );
          }
          const ticks = data.ticks;
          const per = ticks.bucket_seconds === 60 ? "minute" : ticks.bucket_seconds / 60 + " minutes";
          root.querySelectorAll("[data-bucket]").forEach((el) => (el.textContent = per));
          if (ticks.readings.every((v) => v === null)) {
            // Buckets are whole minutes: a poller started less than a minute ago shows none yet.
            message(readingsEl, "No whole minute of ticks in this window yet: is the poller running?");
            return;
          }
          const mostLate = Math.max(1, ...ticks.late_ticks.filter((v) => v !== null));
          plots.push(
            draw(
              readingsEl,
              {
                height: 200,
                tzDate: utc,
                scales: { x: x, y: { range: withZero }, late: { range: [0, Math.max(4, mostLate * 1.2)] } },
                series: [
                  timeSeries,
                  {
                    label: `Readings per ${per}`,
                    stroke: t.line,
                    width: 1.5,
                    fill: withAlpha(t.line, 0.1),
                    value: (u, v) => (v == null ? "no tick ran" : number(v, 0)),
                  },
                  {
                    label: `Late ticks per ${per}`,
                    scale: "late",
                    stroke: t.error,
                    width: 1.5,
                    dash: [6, 4],
                    paths: uPlot.paths.stepped({ align: 1 }),
                    value: (u, v) => (v == null ? "no tick ran" : number(v, 0)),
                  },
                ],
                axes: [
                  timeAxis(t),
                  axis(t, { size: 70, values: (u, values) => values.map((v) => number(v, 0)) }),
                  axis(t, { scale: "late", side: 1, size: 40, grid: { show: false } }),
                ],
              },
              [ticks.t, ticks.readings, ticks.late_ticks]
            )
          );
        })
        .catch((error) => {
          const text = "The chart data could not be loaded (" + error.message + ").";
          message(demandEl, text);
          message(readingsEl, text);
        });
    }

    windowButtons(root, root.dataset.window, load);
  }

  // --- One user's demand for a chosen day --------------------------------------------------------

  function userDemand(el) {
    const picker = document.getElementById("user-demand");
    const input = document.getElementById("demand-day");
    const summary = document.querySelector("[data-demand-summary]");
    let plot = null;

    function load(query) {
      summary.textContent = "";
      getJSON(el.dataset.url + "?" + query)
        .then((data) => {
          if (plot) {
            plot.destroy();
            plot = null;
          }
          const values = data.demand_kw;
          const known = values.filter((v) => v !== null);
          const what = data.day ? data.day + " (UTC)" : "the last " + data.window;
          if (!known.length) {
            message(el, "No demand readings in " + what + ".");
            return;
          }
          const t = theme();
          // Each side drawn only where it applies, joined to zero where demand crosses it; a
          // null (no reading for longer than a gap) stays null on both sides: a break, not a zero.
          const imports = (v) => v !== null && v !== undefined && v >= 0;
          const exports = (v) => v !== null && v !== undefined && v < 0;
          const side = (applies) =>
            values.map((v, i) =>
              v === null ? null : applies(v) ? v : applies(values[i - 1]) || applies(values[i + 1]) ? 0 : null
            );
          const peak = Math.max(...known);
          const lowest = Math.min(...known);
          summary.textContent =
            `${number(known.length, 0)} readings; peak import ${kw(Math.max(peak, 0))}` +
            (lowest < 0 ? `; peak export ${kw(-lowest)}` : "; no export");
          plot = draw(
            el,
            {
              height: 260,
              tzDate: utc,
              scales: {
                x: { time: true, range: [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000] },
                y: { range: withZero },
              },
              series: [
                timeSeries,
                {
                  label: "Import (above zero)",
                  stroke: t.line,
                  width: 1.5,
                  fill: withAlpha(t.line, 0.2),
                  value: (u, v) => kw(v),
                },
                {
                  label: "Export (below zero)",
                  stroke: t.quiet,
                  width: 1.5,
                  dash: [5, 3],
                  fill: withAlpha(t.quiet, 0.25),
                  value: (u, v) => (v == null ? "-" : kw(-v)),
                },
              ],
              axes: [
                timeAxis(t),
                axis(t, {
                  size: 100,
                  values: (u, ticks) => ticks.map((v) => (v < 0 ? kw(-v) + " out" : kw(v))),
                }),
              ],
              hooks: { draw: [zeroLine(t.fg)] },
            },
            [data.t, side(imports), side(exports)]
          );
        })
        .catch((error) => message(el, "The readings could not be loaded (" + error.message + ")."));
    }

    windowButtons(picker, picker.dataset.window, (name) => {
      input.value = "";
      load("window=" + encodeURIComponent(name));
    });
    input.addEventListener("change", () => {
      if (!input.value) return;
      picker.querySelectorAll("[data-window]").forEach((b) => b.setAttribute("aria-pressed", "false"));
      load("day=" + encodeURIComponent(input.value));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const fleet = document.querySelector("[data-fleet-url]");
    if (fleet) fleetCharts(fleet);
    const demand = document.getElementById("user-demand-chart");
    if (demand) userDemand(demand);
  });
})();
