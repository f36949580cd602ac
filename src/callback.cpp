#include <tessera/callback.h>

#include <iostream>

namespace tessera {

void Logger::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  for (auto* destination : destinations_) destination->log_metrics(values, ts);
}

void Logger::log_hyperparameters(const std::map<std::string, std::string>& values) {
  for (auto* destination : destinations_) destination->log_hyperparameters(values);
}

void Logger::log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) {
  for (auto* destination : destinations_) destination->log_image(tag, image, ts);
}

bool Logger::takes_images() const {
  for (auto* destination : destinations_) {
    if (destination->takes_images()) return true;
  }
  return false;
}

void Logger::text(const char* level, const std::string& text) {
  bool shown = false;
  for (auto* destination : destinations_) {
    destination->log_text(level, text);
    shown = shown || destination->shows_text();
  }
  // Nobody would see it otherwise (files are read later, if at all).
  if (!shown) std::cerr << "tessera: " << level << ": " << text << std::endl;
}

void Logger::warn(const std::string& text) { this->text("warning", text); }

void Logger::info(const std::string& text) { this->text("info", text); }

}  // namespace tessera
