/* libFuzzer target: `kiln plot` on any bytes as a History CSV (the reader, the axis
 * ticks over whatever values and ranges the file holds, the SVG writer). It must write
 * the SVG or fail with exit 2 and a message: never a crash, a sanitizer report, a leak
 * or a hang (libFuzzer's -timeout). The first byte, when odd, adds --skip-first 1. */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], csv[96], svg[96];

static void cleanup(void) {
  remove(csv);
  remove(svg);
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (!dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kiln_plot_XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (!mkdtemp(dir)) __builtin_trap();
    snprintf(csv, sizeof csv, "%s/h.csv", dir);
    snprintf(svg, sizeof svg, "%s/h.svg", dir);
    atexit(cleanup);
  }
  int skip = data[0] & 1;
  FILE *f = fopen(csv, "wb");
  if (!f) __builtin_trap();
  if (size > 1) fwrite(data + 1, 1, size - 1, f);
  if (fclose(f)) __builtin_trap();
  char *argv[] = {"plot", csv, "-o", svg, "--skip-first", "1", NULL};
  int rc = cmd_plot(skip ? 6 : 4, argv);
  if (rc != CLI_EXIT_OK && rc != CLI_EXIT_ERROR) __builtin_trap();
  return 0;
}
