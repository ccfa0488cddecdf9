/* augment.c: the augmentation of training pictures and the test-time views (see augment.h),
 * moved here from cifar10.c so that every data set of pictures has the same ones.
 *
 * Augmentation (training split only): a random crop of the padded image (crop_padding,
 * padding_mode), a mirror (flip: random, or airbench's alternating halves) and a cutout square.
 * A sample's choices come from a random stream of its own, derived from (seed, epoch, its index
 * in the data set) and nothing else, so a resumed run repeats them and any batch size, call order
 * or device gives the same pixels. Test-time augmentation (tta) gives each validation and test
 * image several fixed views, chosen by the batch op's `view`. */
#include "augment.h"

#include "data.h"

/* Augmentation keys its streams with a salted seed, so that no (epoch, image) pair can meet the
 * streams the data sets' splits and epoch orders use. */
#define SALT_AUGMENT   0x6175676D656E7431ull /* "augment1" */
#define SALT_ALTERNATE 0x616C74666C697031ull /* "altflip1" */

/* The accepted values of the string params, in the order of their enums in augment.h. */
static const char *const padding_modes[] = { "reflect", "zeros" };
static const char *const flip_names[] = { "none", "random", "alternate" };
static const char *const tta_names[] = { "none", "flip", "flip_shift" };
static const char *const split_names[RX_NSPLITS] = { "train", "valid", "test" };
#define NCHOICES(a) (int)(sizeof(a) / sizeof(a)[0])

enum { ARG_CROP_PADDING, ARG_PADDING_MODE, ARG_FLIP, ARG_CUTOUT, ARG_TTA };

/* The test-time views, by view number: tta = "flip" has the first 2, "flip_shift" all 6. A shift
 * is a crop of the image padded by one pixel (padding_mode): (-1, -1) takes it at (0, 0), so the
 * picture moves one pixel down and right; (1, 1) at (2, 2), up and left. 4 and 5 are 2 and 3
 * mirrored: airbench's mirror-translate set. */
static const struct { int8_t dy, dx; uint8_t flip; } tta_views[] = {
    { 0, 0, 0 }, { 0, 0, 1 }, { -1, -1, 0 }, { 1, 1, 0 }, { -1, -1, 1 }, { 1, 1, 1 },
};
static const int tta_view_count[] = { 0, 2, 6 };

static int check_int_range(rx_ctx *ctx, const char *key, int64_t v, int64_t min, int64_t max, const char *what)
{
    if (v < min || v > max)
        return rx_fail(ctx, "%s must be in [%lld, %lld] (%s), got %lld", key, (long long)min, (long long)max, what,
                       (long long)v);
    return 0;
}

int augment_parse(rx_ctx *ctx, const rx_value *args, int h, int w, augment *aug)
{
    int padding_mode = 0, flip = 0, tta = 0, side = h < w ? h : w;
    char what[96];
    /* reflect needs a padding below the side (as PyTorch's does) */
    snprintf(what, sizeof what, "pixels of padding around the %dx%d image; 0: no crop", h, w);
    if (check_int_range(ctx, "crop_padding", args[ARG_CROP_PADDING].i, 0, side - 1, what) != 0 ||
        check_int_range(ctx, "cutout", args[ARG_CUTOUT].i, 0, side, "side of the square; 0: none") != 0 ||
        data_parse_choice(ctx, "padding_mode", args[ARG_PADDING_MODE].s, padding_modes, NCHOICES(padding_modes),
                          &padding_mode) != 0 ||
        data_parse_choice(ctx, "flip", args[ARG_FLIP].s, flip_names, NCHOICES(flip_names), &flip) != 0 ||
        data_parse_choice(ctx, "tta", args[ARG_TTA].s, tta_names, NCHOICES(tta_names), &tta) != 0)
        return -1;
    *aug = (augment){
        .h = h,
        .w = w,
        .crop_padding = (int)args[ARG_CROP_PADDING].i,
        .pad_zeros = padding_mode == 1,
        .flip = (augment_flip)flip,
        .cutout = (int)args[ARG_CUTOUT].i,
        .tta = (augment_tta)tta,
        .views = tta_view_count[tta],
    };
    return 0;
}

/* The stream of IMAGE's choices in EPOCH: a function of (seed, epoch, image) alone. */
static rx_rng augment_stream(uint64_t seed, int64_t epoch, int32_t image)
{
    rx_rng per_epoch = rx_rng_stream(seed ^ SALT_AUGMENT, (uint64_t)epoch);
    return rx_rng_stream(rx_rng_next(&per_epoch), (uint64_t)image);
}

/* flip = "alternate": which half IMAGE belongs to, fixed by the seed (1: mirrored on even epochs,
 * 0: on odd ones). A fair coin per image, as airbench's first-epoch flip is. */
static uint8_t alternate_half(uint64_t seed, int32_t image)
{
    rx_rng r = rx_rng_stream(seed ^ SALT_ALTERNATE, (uint64_t)image);
    return (uint8_t)(rx_rng_next(&r) >> 63);
}

static int16_t clip_to(int v, int side) { return (int16_t)(v < 0 ? 0 : v > side ? side : v); }

/* A training sample's choices, drawn in a fixed order from its stream: crop offsets, mirror,
 * cutout centre (each only when asked for). */
static void augment_training(const augment *a, uint64_t seed, int64_t epoch, augment_pick *pk)
{
    rx_rng rng = augment_stream(seed, epoch, pk->image);
    if (a->crop_padding > 0) {
        uint64_t offsets = 2 * (uint64_t)a->crop_padding + 1; /* [0, 2 * pad] in the padded image */
        pk->dy = (int16_t)((int)rx_rng_below(&rng, offsets) - a->crop_padding);
        pk->dx = (int16_t)((int)rx_rng_below(&rng, offsets) - a->crop_padding);
    }
    if (a->flip == AUGMENT_FLIP_RANDOM) pk->flip = (uint8_t)(rx_rng_next(&rng) >> 63);
    else if (a->flip == AUGMENT_FLIP_ALTERNATE) pk->flip = alternate_half(seed, pk->image) ^ (uint8_t)(epoch & 1);
    if (a->cutout > 0) {
        int cy = (int)rx_rng_below(&rng, (uint64_t)a->h), cx = (int)rx_rng_below(&rng, (uint64_t)a->w);
        pk->cut_y0 = clip_to(cy - a->cutout / 2, a->h);
        pk->cut_y1 = clip_to(cy - a->cutout / 2 + a->cutout, a->h);
        pk->cut_x0 = clip_to(cx - a->cutout / 2, a->w);
        pk->cut_x1 = clip_to(cx - a->cutout / 2 + a->cutout, a->w);
    }
}

augment_pick augment_pick_for(const augment *a, uint64_t seed, int64_t epoch, rx_split split, int32_t image, int view)
{
    augment_pick pk = { .image = image };
    if (split == RX_TRAIN) {
        augment_training(a, seed, epoch, &pk);
    } else {
        pk.dy = tta_views[view].dy;
        pk.dx = tta_views[view].dx;
        pk.flip = tta_views[view].flip;
    }
    return pk;
}

int augment_check_view(rx_ctx *ctx, const augment *a, rx_split split, int view)
{
    if (split == RX_TRAIN && view != 0)
        return rx_fail(ctx, "batch: view %d of the train split: training batches are augmented, not viewed, and take "
                       "view 0 only", view);
    int views = a->views > 1 ? a->views : 1;
    if (view < 0 || view >= views)
        return rx_fail(ctx, "batch: view %d of the %s split, but tta = \"%s\" gives views 0 .. %d", view,
                       split_names[split], tta_names[a->tta], views - 1);
    return 0;
}

/* Whether pk hands the image out as it is. */
static bool pick_is_plain(augment_pick pk)
{
    return pk.dy == 0 && pk.dx == 0 && !pk.flip && pk.cut_y0 == pk.cut_y1;
}

void augment_render(const augment *a, const float *lut, const uint8_t *img, augment_pick pk, float *dst)
{
    int plane = a->h * a->w;
    if (pick_is_plain(pk)) { /* the common case, and a lookup per pixel */
        for (int c = 0; c < 3; c++) {
            const float *t = lut + c * AUGMENT_LEVELS;
            for (int p = 0; p < plane; p++) dst[c * plane + p] = t[img[c * plane + p]];
        }
        return;
    }
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < a->h; y++)
            for (int x = 0; x < a->w; x++)
                dst[(c * a->h + y) * a->w + x] = augment_pixel(img, lut, pk, a->pad_zeros, a->h, a->w, c, y, x);
}
