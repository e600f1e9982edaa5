/* JPEG decoding for the TFRecord source (libjpeg-turbo's TurboJPEG API): scaled decoding
 * when the pipeline's target is much smaller than the image, CMYK/YCCK converted to RGB,
 * grayscale expanded to RGB, and anything that is not a JPEG reported by what it is. */
#ifndef TRAINPIPE_TFRECORD_JPEG_DECODE_H
#define TRAINPIPE_TFRECORD_JPEG_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

typedef struct jpeg_decoder jpeg_decoder;

/* A decoder holds a TurboJPEG handle and a scratch buffer: one per worker thread. */
jpeg_decoder *jpeg_decoder_new(void);
void jpeg_decoder_free(jpeg_decoder *d);

/* The scale (num/denom, one of 1/1, 1/2, 1/4, 1/8) to decode a width x height image at for a
 * target_width x target_height output: the smallest whose scaled size is still at least the
 * target in both dimensions. A target of 0 means full size. */
void jpeg_choose_scale(int width, int height, int target_height, int target_width, int *num,
                       int *denom);

/* What the first bytes of buf are: "JPEG", "PNG", "GIF", "BMP", "WebP", or NULL when unknown. */
const char *jpeg_sniff(const uint8_t *buf, size_t len);

/* Decodes the JPEG in buf into out (uint8 HWC, channels 3 = RGB or 1 = gray), scaled as
 * jpeg_choose_scale says for the target (0, 0 for full size). `where` names the data in
 * messages ("FILE: record at offset N"). Returns TP_OK, TP_ERR_FORMAT after host->fail for
 * data that is not a decodable JPEG (naming what it is), TP_ERR_NOMEM. Decoder warnings
 * (e.g. extraneous bytes, a premature end) are tolerated as libjpeg does. */
tp_status jpeg_decode(jpeg_decoder *d, const tp_host *host, const uint8_t *buf, size_t len,
                      int channels, int target_height, int target_width, tp_image *out,
                      const char *where);

#endif
