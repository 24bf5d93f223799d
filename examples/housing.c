/* Chapter 4, California housing (small version: 480 train / 120 test rows): scalar
 * regression with 4-fold validation (64-64-1, adam, mse, batch 16, 50 epochs per
 * fold, listing 4.28), then a final model on all training rows for 130 epochs
 * (listing 4.33). Features standardized with training statistics; targets in
 * 100,000 dollars. --variant iterated: iterated 4-fold with shuffling, 3 times.
 * --mae-history FILE: each fold's fit also validates on its fold, and FILE gets the
 * folds' mean val_mean_absolute_error per epoch as "epoch,val_mae" (figure 4.10;
 * `kiln plot FILE --skip-first 10` is figure 4.11). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example_common.h"

static kiln_model *get_model(uint64_t seed, kiln_error *err) {
  kiln_model *m;
  example_check(kiln_model_create(seed, &m, err), "model", err);
  example_check(kiln_model_add_input(m, 8, err), "model", err);
  example_check(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, err), "model", err);
  example_check(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, err), "model", err);
  example_check(kiln_model_add_dense(m, 1, KILN_ACTIVATION_LINEAR, err), "model", err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"mean_absolute_error"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, metrics, 1, err),
                "compile", err);
  return m;
}

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv,
                "usage: example_housing [--variant kfold|iterated] [--mae-history FILE] [flags]",
                &a);
  int iterated = a.variant && strcmp(a.variant, "iterated") == 0;
  if (a.variant && !iterated && strcmp(a.variant, "kfold") != 0) {
    fprintf(stderr, "error: --variant takes kfold or iterated\n");
    return 2;
  }
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  lo.version = "small";
  lo.missing = KILN_MISSING_IMPUTE_MEDIAN;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("california_housing", &lo, &train, &test, &err),
                "california_housing", &err);
  kiln_standardizer st;
  example_check(kiln_standardizer_fit(&st, &train.x, &err), "standardize", &err);
  example_check(kiln_standardizer_apply(&st, &train.x, &err), "standardize", &err);
  example_check(kiln_standardizer_apply(&st, &test.x, &err), "standardize", &err);
  kiln_matrix_scale(&train.y, 1e-5f);
  kiln_matrix_scale(&test.y, 1e-5f);

  double t0 = example_now();
  const int k = 4, rounds = iterated ? 3 : 1;
  kiln_fit_options fo;
  example_fit_options(&a, 50, 16, &fo);
  double fold_mae[12], sum = 0;
  int folds = 0;
  /* --mae-history: the sum over folds of each epoch's val MAE */
  double *mae_sum = a.mae_history ? calloc((size_t)fo.epochs, sizeof(double)) : NULL;
  if (a.mae_history && !mae_sum) {
    fprintf(stderr, "mae-history: out of memory\n");
    return 2;
  }
  for (int round = 0; round < rounds; round++)
    for (int fold = 0; fold < k; fold++) {
      int64_t *ti, *vi, nt, nv;
      example_check(kiln_kfold_split(train.x.rows, k, fold, iterated, a.seed + (uint64_t)round,
                                     &ti, &nt, &vi, &nv, &err), "kfold", &err);
      kiln_dataset part = {0}, val = {0};
      example_check(kiln_dataset_take(&train, ti, nt, &part, &err), "kfold", &err);
      example_check(kiln_dataset_take(&train, vi, nv, &val, &err), "kfold", &err);
      kiln_model *m = get_model(a.seed + (uint64_t)folds, &err);
      kiln_history h = {0};
      kiln_fit_options fold_fo = fo;
      if (mae_sum) { /* only then: the default run stays as it was */
        fold_fo.validation_x = &val.x;
        fold_fo.validation_y = &val.y;
      }
      example_check(kiln_model_fit(m, &part.x, &part.y, &fold_fo, mae_sum ? &h : NULL, &err),
                    "fit", &err);
      for (int e = 0; mae_sum && e < fo.epochs; e++)
        mae_sum[e] += kiln_history_get(&h, "val_mean_absolute_error", e);
      kiln_history_free(&h);
      kiln_logs logs;
      example_check(kiln_model_evaluate(m, &val.x, &val.y, 16, &logs, &err), "evaluate", &err);
      fold_mae[folds] = kiln_logs_get(&logs, "mean_absolute_error");
      sum += fold_mae[folds++];
      kiln_model_free(m);
      kiln_dataset_free(&part);
      kiln_dataset_free(&val);
      free(ti);
      free(vi);
    }
  double kfold_seconds = example_now() - t0;
  if (mae_sum) {
    char key[] = "val_mae";
    char *keys[1] = {key};
    for (int e = 0; e < fo.epochs; e++) mae_sum[e] /= folds;
    kiln_history mean = {fo.epochs, 1, keys, mae_sum};
    example_check(kiln_history_write_csv(&mean, a.mae_history, &err), "mae-history", &err);
    free(mae_sum);
  }

  /* The final model on all training rows (listing 4.33). */
  kiln_model *m = get_model(a.seed, &err);
  kiln_fit_options final_fo;
  example_fit_options(&a, 130, 16, &final_fo);
  example_check(kiln_model_fit(m, &train.x, &train.y, &final_fo, NULL, &err), "fit", &err);
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test.x, &test.y, 16, &logs, &err), "evaluate", &err);

  printf("{\"example\": \"housing\", \"variant\": \"%s\", \"seed\": %llu, \"fold_epochs\": %d, "
         "\"fold_val_mae\": [", iterated ? "iterated" : "kfold", (unsigned long long)a.seed,
         fo.epochs);
  for (int i = 0; i < folds; i++) printf("%s%.4f", i ? ", " : "", fold_mae[i]);
  printf("], \"kfold_val_mae\": %.4f, \"final_epochs\": %d, \"test_mse\": %.4f, "
         "\"test_mae\": %.4f, \"kfold_seconds\": %.2f}\n",
         sum / folds, final_fo.epochs, kiln_logs_get(&logs, "loss"),
         kiln_logs_get(&logs, "mean_absolute_error"), kfold_seconds);
  kiln_model_free(m);
  kiln_standardizer_free(&st);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
