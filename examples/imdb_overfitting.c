/* Chapter 5, fighting overfitting on IMDB: the original 16-16-1 model against a
 * smaller (4-4), a larger (512-512), an L2(0.002)-regularized and a dropout(0.5)
 * version, each rmsprop, batch 512, 20 epochs, 40% of the training rows held out
 * for validation. Prints each variant's best validation loss and the epoch of it:
 * the cures overfit later and less. --variant NAME runs one. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "example_common.h"

typedef struct { const char *name; int64_t units; float l2; float dropout; } variant;

static const variant variants[] = {
    {"original", 16, 0, 0}, {"smaller", 4, 0, 0}, {"larger", 512, 0, 0},
    {"l2", 16, 0.002f, 0},  {"dropout", 16, 0, 0.5f},
};

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv,
                "usage: example_imdb_overfitting [--variant original|smaller|larger|l2|dropout]"
                " [flags]", &a);
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  lo.num_words = 10000;
  kiln_dataset train = {0};
  example_check(kiln_dataset_load("imdb", &lo, &train, NULL, &err), "imdb", &err);
  printf("{\"example\": \"imdb_overfitting\", \"seed\": %llu, \"variants\": [",
         (unsigned long long)a.seed);
  int printed = 0;
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    const variant *var = &variants[v];
    if (a.variant && strcmp(a.variant, var->name) != 0) continue;
    kiln_model *m;
    example_check(kiln_model_create(a.seed, &m, &err), "model", &err);
    example_check(kiln_model_add_input(m, 10000, &err), "model", &err);
    kiln_dense_options d;
    kiln_dense_options_init(&d);
    d.activation = KILN_ACTIVATION_RELU;
    d.kernel_regularizer.l2 = var->l2;
    for (int layer = 0; layer < 2; layer++) {
      example_check(kiln_model_add_dense_ex(m, var->units, &d, &err), "model", &err);
      if (var->dropout > 0) example_check(kiln_model_add_dropout(m, var->dropout, &err), "model", &err);
    }
    example_check(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, &err), "model", &err);
    kiln_optimizer opt;
    kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
    const char *metrics[] = {"accuracy"};
    example_check(kiln_model_compile(m, &opt, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, &err),
                  "compile", &err);
    kiln_fit_options fo;
    example_fit_options(&a, 20, 512, &fo);
    fo.validation_split = 0.4;
    kiln_history h = {0};
    example_check(kiln_model_fit(m, &train.x, &train.y, &fo, &h, &err), var->name, &err);
    int best = 0;
    for (int e = 1; e < h.epochs; e++)
      if (kiln_history_get(&h, "val_loss", e) < kiln_history_get(&h, "val_loss", best)) best = e;
    printf("%s{\"variant\": \"%s\", \"best_epoch\": %d, \"best_val_loss\": %.4f, "
           "\"final_val_loss\": %.4f, \"best_val_accuracy\": %.4f}",
           printed++ ? ", " : "", var->name, best + 1, kiln_history_get(&h, "val_loss", best),
           kiln_history_get(&h, "val_loss", h.epochs - 1),
           kiln_history_get(&h, "val_accuracy", best));
    fflush(stdout);
    kiln_history_free(&h);
    kiln_model_free(m);
  }
  printf("]}\n");
  if (!printed) {
    fprintf(stderr, "error: unknown --variant %s\n", a.variant);
    return 2;
  }
  kiln_dataset_free(&train);
  return 0;
}
