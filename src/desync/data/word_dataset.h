// "words": a text corpus as words, for the embedding trainers (model "sgns").
//
// data.path is a UTF-8 text file with one sentence per line, or a folder of *.txt files
// (data/word_corpus.h; `desync corpus` writes the GCIDE + WordNet-gloss corpus this way). A
// seeded draw (data.split_seed) holds out data.text_test_fraction of the sentences; the
// vocabulary is every word of the training sentences (count >= 1, by count descending, ties by
// first occurrence), so a trainer's min_count keeps a prefix of it. data.train_limit keeps the
// first N training sentences; data.test_limit the first N test examples.
//
// The splits as a Dataset (kind kFeatures):
//   train.inputs   int32 [T]: the word ids of the training sentences, concatenated;
//   train.targets  int64 [S + 1]: sentence s is inputs[targets[s], targets[s + 1]);
//   train.num_classes  the vocabulary size V; the words and counts are in the file named by
//                  DatasetSplits::tokenizer_path ("word<TAB>count" per line, by id), written
//                  atomically under data.cache_dir.
//   test.inputs    int64 [n, 7]: held-out examples (centre, context, 5 negatives): every
//                  (centre, context) pair at distance 1..5 in a held-out sentence with both
//                  words in the vocabulary (at most kMaxTestPairs of them, a seeded choice), with
//                  negatives drawn from the training counts^0.75; test.targets int64 zeros [n].
//                  The sgns model scores the context against the negatives, so the evaluation's
//                  loss and accuracy are those of picking the true context among 6.
// Use word_corpus_of() to read the training split back as a WordCorpus view.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "desync/data/dataset.h"
#include "desync/data/word_corpus.h"

namespace desync {

constexpr int64_t kMaxTestPairs = 100000;

DatasetSplits load_word_dataset(const DataConfig& cfg);

// The vocabulary file of a words dataset: words and counts by id.
Vocabulary read_vocabulary_file(const std::string& path);

// The training split of a words dataset as a WordCorpus (copies the ids and offsets); its
// vocabulary holds the counts with placeholder words ("w<id>") unless `vocab` is given.
WordCorpus word_corpus_of(const Dataset& train, const Vocabulary* vocab = nullptr);

}  // namespace desync
