/* Chapter 4, Reuters: 46-way topic classification (64-64-46 softmax, adam, batch
 * 512, 9 epochs, categorical crossentropy on one-hot labels, top-3 accuracy).
 * --variant bottleneck: listing 4.23's 4-unit middle layer (20 epochs, batch 128,
 * validated on the first 1,000 training rows), which loses accuracy. */
#include <stdio.h>
#include <string.h>

#include "example_common.h"

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_reuters [--variant standard|bottleneck] [flags]", &a);
  int bottleneck = a.variant && strcmp(a.variant, "bottleneck") == 0;
  if (a.variant && !bottleneck && strcmp(a.variant, "standard") != 0) {
    fprintf(stderr, "error: --variant takes standard or bottleneck\n");
    return 2;
  }
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  lo.num_words = 10000;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("reuters", &lo, &train, &test, &err), "reuters", &err);
  kiln_matrix y_train, y_test;
  example_check(kiln_one_hot(&train.y, 46, &y_train, &err), "one_hot", &err);
  example_check(kiln_one_hot(&test.y, 46, &y_test, &err), "one_hot", &err);

  double t0 = example_now();
  kiln_model *m;
  example_check(kiln_model_create(a.seed, &m, &err), "model", &err);
  example_check(kiln_model_add_input(m, 10000, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, &err), "model", &err);
  example_check(kiln_model_add_dense(m, bottleneck ? 4 : 64, KILN_ACTIVATION_RELU, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 46, KILN_ACTIVATION_SOFTMAX, &err), "model", &err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy", "top_3_accuracy"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_CATEGORICAL_CROSSENTROPY, metrics, 2, &err),
                "compile", &err);
  kiln_fit_options fo;
  kiln_history h = {0};
  kiln_matrix x_val = {0}, y_val = {0}, x_part = {0}, y_part = {0};
  if (bottleneck) {
    example_fit_options(&a, 20, 128, &fo);
    example_check(kiln_matrix_slice_rows(&train.x, 0, 1000, &x_val, &err), "split", &err);
    example_check(kiln_matrix_slice_rows(&y_train, 0, 1000, &y_val, &err), "split", &err);
    example_check(kiln_matrix_slice_rows(&train.x, 1000, train.x.rows, &x_part, &err), "split", &err);
    example_check(kiln_matrix_slice_rows(&y_train, 1000, y_train.rows, &y_part, &err), "split", &err);
    fo.validation_x = &x_val;
    fo.validation_y = &y_val;
    example_check(kiln_model_fit(m, &x_part, &y_part, &fo, &h, &err), "fit", &err);
  } else {
    example_fit_options(&a, 9, 512, &fo);
    example_check(kiln_model_fit(m, &train.x, &y_train, &fo, &h, &err), "fit", &err);
  }
  double train_seconds = example_now() - t0;
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test.x, &y_test, 512, &logs, &err), "evaluate", &err);
  printf("{\"example\": \"reuters\", \"variant\": \"%s\", \"seed\": %llu, \"epochs\": %d, "
         "\"test_loss\": %.4f, \"test_accuracy\": %.4f, \"test_top_3_accuracy\": %.4f",
         bottleneck ? "bottleneck" : "standard", (unsigned long long)a.seed, fo.epochs,
         kiln_logs_get(&logs, "loss"), kiln_logs_get(&logs, "accuracy"),
         kiln_logs_get(&logs, "top_3_accuracy"));
  if (bottleneck)
    printf(", \"val_accuracy\": %.4f", kiln_history_get(&h, "val_accuracy", h.epochs - 1));
  printf(", \"train_seconds\": %.2f}\n", train_seconds);
  kiln_history_free(&h);
  kiln_matrix_free(&x_val);
  kiln_matrix_free(&y_val);
  kiln_matrix_free(&x_part);
  kiln_matrix_free(&y_part);
  kiln_matrix_free(&y_train);
  kiln_matrix_free(&y_test);
  kiln_model_free(m);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
