/* test_record.c: the field lists of record.h and what they drive: metrics.csv's header, rows and
 * reader (with the lines it must refuse), the terminal's epoch line, and summary.json. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>

#include "record.h"

static const epoch_record sample = { .epoch = 3, .seconds = 12.5, .train_loss = 1.25, .valid_loss = 1.5,
                                     .valid_accuracy = 0.625, .lr = 0.01, .train_seconds = 10, .images_per_second = 4000,
                                     .grad_norm = NAN, .grad_norm_max = NAN, .epochs_without_improvement = 2 };

static void test_csv_header_and_row(void **state)
{
    strbuf b = { 0 };
    epoch_csv_header(&b);
    epoch_csv_row(&b, &sample);
    assert_string_equal(b.s, "epoch,seconds,train_loss,valid_loss,valid_accuracy,lr,train_seconds,images_per_second,"
                             "grad_norm,grad_norm_max,clipped_steps,epochs_without_improvement\n"
                             "3,12.5000,1.250000,1.500000,0.625000,0.01,10.0000,4000.0,nan,nan,0,2\n");
    sb_free(&b);
}

static void test_csv_round_trip(void **state)
{
    strbuf b = { 0 };
    epoch_csv_row(&b, &sample);
    b.s[b.len - 1] = '\0'; /* the reader gets lines without their newline */
    epoch_record e;
    assert_int_equal(epoch_csv_parse(b.s, &e), 0);
    assert_int_equal(e.epoch, 3);
    assert_true(e.seconds == 12.5 && e.train_loss == 1.25 && e.valid_loss == 1.5 && e.valid_accuracy == 0.625);
    assert_true(e.lr == 0.01 && e.train_seconds == 10 && e.images_per_second == 4000);
    assert_true(isnan(e.grad_norm) && isnan(e.grad_norm_max) && e.clipped_steps == 0 && e.epochs_without_improvement == 2);
    sb_free(&b);
    /* A run without validation writes nan; it reads back as NaN. */
    assert_int_equal(epoch_csv_parse("1,2.0,0.5,nan,nan,0.1,2.0,100.0,1.5,4.25,7,0", &e), 0);
    assert_true(isnan(e.valid_loss) && isnan(e.valid_accuracy));
    assert_true(e.grad_norm == 1.5 && e.grad_norm_max == 4.25 && e.clipped_steps == 7 && e.epochs_without_improvement == 0);
    /* A row an older runexp wrote (a run resumed after an upgrade): the later columns are unknown. */
    e.clipped_steps = e.epochs_without_improvement = 9;
    assert_int_equal(epoch_csv_parse("1,2.0,0.5,0.4,0.9,0.1,2.0,100.0", &e), 0);
    assert_true(e.images_per_second == 100 && isnan(e.grad_norm) && isnan(e.grad_norm_max));
    assert_true(e.clipped_steps == 0 && e.epochs_without_improvement == 0);
}

static void test_csv_broken_rows(void **state)
{
    static const char *const broken[] = {
        "",                                      /* empty */
        "1,2.0,0.5,0.4,0.9,0.1,2.0",             /* a column short of an older runexp's row */
        "1,2.0,0.5,0.4,0.9,0.1,2.0,100.0,7",     /* between an older row and a whole one */
        "1,2.0,0.5,0.4,0.9,0.1,2.0,100.0,1,2,3", /* a column short */
        "1,2.0,0.5,0.4,0.9,0.1,2.0,100.0,1,2,3,4,5", /* a column too many */
        "1,2.0,0.5,0.4,0.9,0.1,2.0,100.0,",      /* an older row with a separator after it */
        "1,2.0,0.5,x,0.9,0.1,2.0,100.0",         /* not a number */
        "1,2.0,0.5,,0.9,0.1,2.0,100.0",          /* empty field */
        "1;2.0;0.5;0.4;0.9;0.1;2.0;100.0",       /* another separator */
        "1,2.0,0.5,0.4,0.9,0.1,2.0,100.0 ",      /* trailing garbage */
    };
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
        epoch_record e;
        if (epoch_csv_parse(broken[i], &e) != -1) fail_msg("accepted broken row '%s'", broken[i]);
    }
}

static char *printed(const epoch_record *e, int64_t epochs)
{
    static char text[512];
    FILE *f = fmemopen(text, sizeof text, "w");
    assert_non_null(f);
    epoch_print(f, NULL, e, epochs);
    fclose(f);
    return text;
}

static void test_terminal_line(void **state)
{
    assert_string_equal(printed(&sample, 30), "epoch 3/30  12.50 s  train loss 1.2500  valid loss 1.5000  valid "
                                              "accuracy 62.50%  lr 0.01  (train 10.00 s, 4000 img/s)\n");
    epoch_record e = sample;
    e.valid_loss = e.valid_accuracy = NAN; /* no validation split: not shown */
    assert_string_equal(printed(&e, 30), "epoch 3/30  12.50 s  train loss 1.2500  lr 0.01  (train 10.00 s, 4000 img/s)\n");
    e.grad_norm = 0.75; /* with clip_grad_norm: the epoch's norms before clipping */
    e.grad_norm_max = 12.5;
    assert_string_equal(printed(&e, 30), "epoch 3/30  12.50 s  train loss 1.2500  lr 0.01  (train 10.00 s, 4000 img/s)"
                                         "  grad norm 0.75 (max 12.5)\n");
}

static void test_summary_json(void **state)
{
    run_summary s = { .config = "c\"x.lua", .dir = "runs/a", .device = "cpu", .threads = 2, .seed = 9007199254740993,
                      .epochs = 4, .best_epoch = 3, .best_valid_loss = INFINITY,
                      .test = { .loss = 0.5, .accuracy = 0.75, .correct = 3, .total = 4, .nclasses = 2,
                                .class_names = { "cat", "dog" }, .class_correct = { 1, 2 }, .class_total = { 2, 2 } },
                      .train_seconds_per_epoch = 1.5, .images_per_second = 100, .total_seconds = NAN,
                      .stopped_early = true, .stopped_epoch = 3, .clipped_steps = 17,
                      .started = "2026-12-04T05:00:00Z", .host = "box", .runexp_version = "0.2.0", .revision = "unknown" };
    strbuf b = { 0 };
    summary_json(&b, &s);
    assert_string_equal(b.s, "{\n"
                             "  \"config\": \"c\\\"x.lua\",\n"
                             "  \"run_dir\": \"runs/a\",\n"
                             "  \"device\": \"cpu\",\n"
                             "  \"threads\": 2,\n"
                             "  \"seed\": 9007199254740993,\n" /* above 2^53: kept exact, not through a double */
                             "  \"epochs\": 4,\n"
                             "  \"best_epoch\": 3,\n"
                             "  \"best_valid_loss\": null,\n"
                             "  \"test_loss\": 0.5,\n"
                             "  \"test_accuracy\": 0.75,\n"
                             "  \"test_correct\": 3,\n"
                             "  \"test_total\": 4,\n"
                             "  \"per_class_accuracy\": {\n"
                             "    \"cat\": 0.5,\n"
                             "    \"dog\": 1\n"
                             "  },\n"
                             "  \"train_seconds_per_epoch\": 1.5,\n"
                             "  \"images_per_second\": 100,\n"
                             "  \"total_seconds\": null,\n"
                             "  \"stopped_early\": true,\n"
                             "  \"stopped_epoch\": 3,\n"
                             "  \"clipped_steps\": 17,\n"
                             "  \"started\": \"2026-12-04T05:00:00Z\",\n"
                             "  \"host\": \"box\",\n"
                             "  \"runexp_version\": \"0.2.0\",\n"
                             "  \"revision\": \"unknown\"\n"
                             "}\n");
    sb_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_header_and_row),
        cmocka_unit_test(test_csv_round_trip),
        cmocka_unit_test(test_csv_broken_rows),
        cmocka_unit_test(test_terminal_line),
        cmocka_unit_test(test_summary_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
