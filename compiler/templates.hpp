// The device headers under templates/, embedded in the library at build time.
#pragma once
#include <span>
#include <string_view>

namespace dmoe::detail {
struct EmbeddedTemplate {
  std::string_view name;     // include name, e.g. "dmoe/kernels/product.cuh"
  std::string_view content;
};
std::span<const EmbeddedTemplate> embedded_templates();
// SHA-256 over every embedded header's name and content: part of every cache key.
std::string_view templates_digest();
}  // namespace dmoe::detail
