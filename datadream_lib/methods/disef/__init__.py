"""DISEF (da Costa et al., 2023), as DataDream's Table 1 re-runs it on SD 2.1.

Preparation: a caption of every shot by LLaVA-1.5-7B (`caption_model`, transformers'
`LlavaForConditionalGeneration`, loaded in the run's precision), asked the authors' query in their
`llava_v1` conversation (system prompt first), sampled at temperature 0.2 from a
seed of (run seed, class, shot); cached in `adaptation/captions.jsonl`, one row per shot, so an
interrupted captioning resumes. A caption longer than the text encoder's 77 tokens is cut there
(Stable Diffusion reads no further); the row keeps the whole caption and says it was cut.

Generation: img2img from a shot, padded to a square and resized, DPM-Solver++ (order 2) with the
authors' linspace timestep spacing, 20 steps from step 5 (strength 0.75: t 749), guidance 8.0,
prompted with a shot's caption. Filter: CLIP (`filter_model` / `filter_pretrained`, the authors'
open_clip ViT-H-14 on LAION-2B) zero-shot over the classes with the authors' template of the
dataset (`FILTER_TEMPLATES`); a candidate passes when its argmax is its class.

`filter_rule: class` (default; the authors' rule, their SAP:338-345, 427): each class has one
stream of candidates, in the authors' batches of 8 (`DRAW_BATCH`): the batch's source shots are
drawn at random with replacement and its captions shuffled within it (so a candidate may carry its
own shot's caption), from the batch's seed; each candidate's noise from its own seed. The class's
images are the candidates that pass, in stream order, until `filter_budget` batches (100: 800
candidates) are spent; from then on every candidate is kept, unfiltered. (The authors keep every
passing image of their last batch, up to 7 beyond `images_per_class`; here a class stops at it.)
Image i of a class thus depends on the filter's verdicts on all earlier candidates: the engine
shards such a method by whole classes, candidates are made in aligned blocks of the run's batch
size (so a resume makes each in the same batch, bit for bit), and an image lost later is made again
from the candidate its manifest row names. `filter_rule: image` (an option, the library's earlier
rule): image i starts from the shot `index mod K` with the caption of another shot drawn from its
seed, and is made again with new noise, the seed of (run seed, class, index, attempt), at most
`filter_attempts` times; the attempt most probable for its class is kept. With a compiled UNet a
retry batch is filled up to the first batch's size, so it does not recompile.

The manifest row records the candidate's plan and seed (`candidate`: its place in the class's
stream; `attempts`: the candidates made for this image), its filter probability, whether it passed
and whether it was kept unfiltered; `class_summary` gives per class the filter's pass rate and the
share kept unfiltered (notebook 02 and the FID table).

The authors' code draws no seeds, re-uses one scheduler's timesteps across calls (an IndexError on
diffusers 0.42) and loads the filter's tokenizer with the model (fails on open_clip 3.x): here every
attempt has its own seed, the pipeline sets its timesteps per call, and the tokenizer is open_clip's.
"""

from datadream_lib.methods.disef.captions import CAPTIONS_FILE, cut_to_text_encoder, llava_prompt, load_captioner
from datadream_lib.methods.disef.filter import FILTER_TEMPLATE, FILTER_TEMPLATES, ZeroShotFilter, filter_prompts, load_filter
from datadream_lib.methods.disef.method import DISEF, DISEFParameters, DRAW_BATCH, expected_candidates

__all__ = ["CAPTIONS_FILE", "DISEF", "DISEFParameters", "DRAW_BATCH", "FILTER_TEMPLATE", "FILTER_TEMPLATES", "ZeroShotFilter",
           "cut_to_text_encoder", "expected_candidates", "filter_prompts", "llava_prompt", "load_captioner", "load_filter"]
