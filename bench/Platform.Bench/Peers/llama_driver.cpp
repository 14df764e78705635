// Greedy decoding driver for the `bench engine --peer-llamacpp` comparison. The bench compiles it at run
// time against a llama.cpp build given by path (never vendored) and runs it on a GGUF it wrote.
// It loads the model, feeds the given prompt token ids as one batch, then greedily decodes (argmax of
// the logits, no sampler) one token at a time, and prints, one per line:
//   first_token_ms <ms>      prompt evaluation to the first generated id
//   decode_tokens_per_s <r>  ids after the first, over the time they took
//   ids <id,id,...>          every generated id, the first included
// Usage: llama_driver --model F.gguf --prompt-ids 1,2,3 [--predict N] [--threads N] [--kv f32|f16] [--ctx N] [--parallel B]
// --prompt-file PATH reads the ids (the same comma-separated form) from a file instead: a long context's ids pass the
// kernel's limit on one argument (128 KB).
// With --parallel B (> 1), B sequences decode over the one prompt: it is evaluated once (sequence 0) and its
// KV copied to sequences 1..B-1 (llama.cpp's own prefix sharing, a unified KV buffer), then every step decodes
// one token of each sequence in one batch. decode_tokens_per_s counts all B sequences' tokens; ids are
// sequence 0's.
// With --score, it generates nothing: it evaluates the prompt ids as one batch with logits at every
// position and prints `argmax <id,id,...>`, the top id after each prefix (teacher forcing; the bench's
// quantization agreement check).
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::vector<llama_token> ParseIds(const char* text) {
    std::vector<llama_token> ids;
    const char* p = text;
    while (*p != '\0') {
        char* end = nullptr;
        long id = std::strtol(p, &end, 10);
        if (end == p) break;
        ids.push_back(static_cast<llama_token>(id));
        p = (*end == ',') ? end + 1 : end;
    }
    return ids;
}

llama_token Argmax(const float* logits, int count) {
    int best = 0;
    for (int i = 1; i < count; i++) {
        if (logits[i] > logits[best]) best = i;
    }
    return static_cast<llama_token>(best);
}

void PrintIds(const char* label, const std::vector<llama_token>& ids) {
    std::printf("%s ", label);
    for (size_t i = 0; i < ids.size(); i++) std::printf(i == 0 ? "%d" : ",%d", ids[i]);
    std::printf("\n");
}

// --score: the ids as one batch, logits at every position, the top id after each prefix.
int Score(llama_context* context, const std::vector<llama_token>& ids, int vocabSize) {
    const int count = static_cast<int>(ids.size());
    llama_batch batch = llama_batch_init(count, 0, 1);
    for (int i = 0; i < count; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = count;
    const bool evaluated = llama_decode(context, batch) == 0;
    std::vector<llama_token> top;
    for (int i = 0; evaluated && i < count; i++) top.push_back(Argmax(llama_get_logits_ith(context, i), vocabSize));
    llama_batch_free(batch);
    if (!evaluated) {
        std::fprintf(stderr, "evaluating the ids to score failed\n");
        return 1;
    }
    PrintIds("argmax", top);
    return 0;
}

// Greedy generation of B sequences over one prompt (B = 1: plain greedy decoding): the prompt as one batch, its
// KV copied to sequences 1..B-1, then one batch of B tokens (one per sequence, each its own argmax) per step.
int Generate(llama_context* context, std::vector<llama_token>& prompt, int predict, int parallel, int vocabSize) {
    std::vector<llama_token> generated;
    const int promptLength = static_cast<int>(prompt.size());
    Clock::time_point start = Clock::now();
    if (llama_decode(context, llama_batch_get_one(prompt.data(), promptLength)) != 0) {
        std::fprintf(stderr, "prompt evaluation failed\n");
        return 1;
    }
    std::vector<llama_token> next(parallel, Argmax(llama_get_logits_ith(context, -1), vocabSize));
    for (int s = 1; s < parallel; s++) llama_memory_seq_cp(llama_get_memory(context), 0, s, -1, -1);
    generated.push_back(next[0]);
    std::printf("first_token_ms %.3f\n", MillisecondsSince(start));
    std::fflush(stdout);

    llama_batch batch = llama_batch_init(parallel, 0, 1);
    Clock::time_point decodeStart = Clock::now();
    for (int step = 1; step < predict; step++) {
        for (int s = 0; s < parallel; s++) {
            batch.token[s] = next[s];
            batch.pos[s] = promptLength + step - 1;
            batch.n_seq_id[s] = 1;
            batch.seq_id[s][0] = s;
            batch.logits[s] = 1;
        }
        batch.n_tokens = parallel;
        if (llama_decode(context, batch) != 0) {
            std::fprintf(stderr, "decode failed at step %d\n", step);
            llama_batch_free(batch);
            return 1;
        }
        for (int s = 0; s < parallel; s++) next[s] = Argmax(llama_get_logits_ith(context, s), vocabSize);
        generated.push_back(next[0]);
    }
    double decodeMs = MillisecondsSince(decodeStart);
    llama_batch_free(batch);
    if (predict > 1) std::printf("decode_tokens_per_s %.4f\n", static_cast<double>(parallel) * (predict - 1) / (decodeMs / 1000.0));
    PrintIds("ids", generated);
    return 0;
}

void QuietLog(ggml_log_level level, const char* text, void*) {
    if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
    std::string modelPath;
    std::vector<llama_token> prompt;
    int predict = 32, threads = 2, contextSize = 4096, parallel = 1;
    ggml_type kvType = GGML_TYPE_F32;
    bool score = false;
    for (int i = 1; i < argc; i += 2) {
        std::string name = argv[i];
        if (name == "--score") { score = true; i--; continue; }
        if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", argv[i]); return 2; }
        const char* value = argv[i + 1];
        if (name == "--model") modelPath = value;
        else if (name == "--prompt-ids") prompt = ParseIds(value);
        else if (name == "--prompt-file") {
            std::ifstream file(value);
            if (!file) { std::fprintf(stderr, "could not read %s\n", value); return 2; }
            std::stringstream text;
            text << file.rdbuf();
            prompt = ParseIds(text.str().c_str());
        }
        else if (name == "--predict") predict = std::atoi(value);
        else if (name == "--threads") threads = std::atoi(value);
        else if (name == "--ctx") contextSize = std::atoi(value);
        else if (name == "--parallel") parallel = std::atoi(value);
        else if (name == "--kv") kvType = std::strcmp(value, "f16") == 0 ? GGML_TYPE_F16 : GGML_TYPE_F32;
        else { std::fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
    }
    if (modelPath.empty() || prompt.empty() || predict < 1 || parallel < 1 || (score && parallel > 1)) {
        std::fprintf(stderr, "usage: llama_driver --model F.gguf (--prompt-ids 1,2,3 | --prompt-file F) [--predict N] [--threads N] [--kv f32|f16] [--ctx N] [--parallel B]\n");
        return 2;
    }

    llama_log_set(QuietLog, nullptr);
    llama_backend_init();
    llama_model_params modelParams = llama_model_default_params();
    modelParams.n_gpu_layers = 0;
    llama_model* model = llama_model_load_from_file(modelPath.c_str(), modelParams);
    if (model == nullptr) { std::fprintf(stderr, "could not load %s\n", modelPath.c_str()); return 1; }

    llama_context_params contextParams = llama_context_default_params();
    contextParams.n_ctx = static_cast<uint32_t>(contextSize);
    contextParams.n_batch = static_cast<uint32_t>(prompt.size() > 512 ? prompt.size() : 512);
    contextParams.n_ubatch = contextParams.n_batch;
    contextParams.n_threads = threads;
    contextParams.n_threads_batch = threads;
    contextParams.type_k = kvType;
    contextParams.type_v = kvType;
    contextParams.no_perf = true;
    contextParams.n_seq_max = static_cast<uint32_t>(parallel);
    if (parallel > 1) contextParams.kv_unified = true; // the sequences share the prompt's cells, as the engine's requests share its blocks
    llama_context* context = llama_init_from_model(model, contextParams);
    if (context == nullptr) { std::fprintf(stderr, "could not create a context\n"); return 1; }
    const int vocabSize = llama_vocab_n_tokens(llama_model_get_vocab(model));

    const int status = score ? Score(context, prompt, vocabSize) : Generate(context, prompt, predict, parallel, vocabSize);
    llama_free(context);
    llama_model_free(model);
    llama_backend_free();
    return status;
}
